"""What audit redaction costs per event on the charge path: pre-screened ``redact_text`` against the
full pipeline on every string, in one run, on the four events one successful charge records
(charge.created and charge.attempt.sent with the charge, then charge.attempt.outcome and
charge.succeeded with its result), built with ``payorch.audit.trail`` as the service builds them.

    .venv/bin/python bench/redaction_bench.py [--rounds 7] [--loops 2000]

"full" is the walk as it was before the pre-screen: ``redact_text`` and each mapping key go through
``_redact_text_full`` (every secret pattern, then ``mask_pans``, on every string), no key memo.
"fast" is the code as it is. Both modes must give the same payloads (checked before timing). Rounds
alternate the two modes; each figure is the median over rounds of microseconds per event.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from payorch.audit import redaction, trail
from payorch.audit.events import Actor, AuditEvent, Origin
from payorch.ids import new_id


def charge_events() -> list[AuditEvent]:
    """The four audit events of one successful POST /v1/charges (payments/service.py)."""
    actor = Actor(merchant_id=new_id("mer"), api_key_id=new_id("key"))
    origin = Origin(ip="203.0.113.7", request_id=new_id("req"))
    charge_id, attempt_id = new_id("ch"), new_id("att")
    created = trail.charge_created(
        actor,
        origin,
        charge_id=charge_id,
        amount=1050,
        currency="usd",
        capture=True,
        livemode=False,
        gateways=["sandbox", "stripe"],
        description="Order #1042: 2 x blue widget",
        metadata={"order_id": "1042", "customer": "cus_8f2k1", "channel": "web"},
        idempotency_key=str(uuid.uuid4()),
    )
    sent = trail.attempt_sent(actor, origin, charge_id=charge_id, attempt_id=attempt_id, gateway="sandbox", seq=1)
    outcome = trail.attempt_outcome(
        actor,
        origin,
        charge_id=charge_id,
        attempt_id=attempt_id,
        gateway="sandbox",
        status="approved",
        code=None,
        decline_code=None,
        reference="sbx_" + uuid.uuid4().hex[:24],
        latency_ms=12,
    )
    succeeded = trail.charge_status(
        actor, origin, charge_id=charge_id, status="succeeded", amount=1050, currency="usd", gateway="sandbox"
    )
    assert succeeded is not None
    return [created, sent, outcome, succeeded]


def _full_key_verdict(key: str) -> tuple[str, bool]:
    return redaction._redact_text_full(key), redaction.is_secret_key(key)


@contextmanager
def full_pipeline() -> Iterator[None]:
    """Every string through ``_redact_text_full``, keys included (no memo): the cost before."""
    saved = redaction.redact_text, redaction._key_verdict
    redaction.redact_text = redaction._redact_text_full
    redaction._key_verdict = _full_key_verdict
    try:
        yield
    finally:
        redaction.redact_text, redaction._key_verdict = saved


@contextmanager
def fast_path() -> Iterator[None]:
    yield


def per_event_us(work: Callable[[], object], events: int, loops: int) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        work()
    return (time.perf_counter() - started) / (loops * events) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=2000)
    args = parser.parse_args()

    events = charge_events()
    dumps = [event.model_dump(mode="json", exclude={"id", "occurred_at"}) for event in events]
    modes: dict[str, Callable[[], Any]] = {"fast": fast_path, "full": full_pipeline}

    results: dict[str, dict[str, list[float]]] = {m: {"redact": [], "redacted_payload": []} for m in modes}
    outputs = {}
    for name, mode in modes.items():
        with mode():
            outputs[name] = [event.redacted_payload() for event in events]
    assert outputs["fast"] == outputs["full"], "the two paths disagree"

    def redact_all() -> None:
        for dump in dumps:
            redaction.redact(dump)

    def payload_all() -> None:
        for event in events:
            event.redacted_payload()

    for _ in range(args.rounds):
        for name, mode in modes.items():
            with mode():
                redact_all()  # warm (the key memo, in the fast mode)
                results[name]["redact"].append(per_event_us(redact_all, len(events), args.loops))
                results[name]["redacted_payload"].append(per_event_us(payload_all, len(events), args.loops))

    report: dict[str, Any] = {
        "events_per_charge": len(events),
        "actions": [event.action for event in events],
        "rounds": args.rounds,
        "loops_per_round": args.loops,
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for name in modes:
        redact_us = statistics.median(results[name]["redact"])
        payload_us = statistics.median(results[name]["redacted_payload"])
        report[name] = {
            "redact_us_per_event": round(redact_us, 1),
            "redacted_payload_us_per_event": round(payload_us, 1),
            "redacted_payload_us_per_charge": round(payload_us * len(events), 1),
            "redact_us_per_event_all_rounds": [round(x, 1) for x in results[name]["redact"]],
        }
    report["speedup_redact"] = round(report["full"]["redact_us_per_event"] / report["fast"]["redact_us_per_event"], 1)
    report["saved_us_per_charge"] = round(
        report["full"]["redacted_payload_us_per_charge"] - report["fast"]["redacted_payload_us_per_charge"], 1
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

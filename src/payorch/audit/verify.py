"""Re-read a sink and recompute the chain: ``payorch audit verify`` (DESIGN.md section 8).

The first problem found is named by chain position and event id:
- ``gap``: a position is missing (an event or a whole batch was deleted);
- ``reorder``: a position appears out of order (events moved within or across batches);
- ``altered``: an event's content no longer hashes to its recorded hash, or its ``prev_hash`` does
  not match the previous link, or it differs from the database's record of that position;
- ``duplicate``: the same position stored twice with different content.
Identical re-deliveries of a position (a batch re-shipped after an outage) are not problems.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chained_body, link_hash
from payorch.audit.config import AuditConfig
from payorch.audit.sinks import CloudTrailLakeSink, build_sinks
from payorch.audit.sinks.base import AuditSink, CorruptRecord, SinkError
from payorch.storage import audit as audit_store
from payorch.storage.database import DATABASE_ERRORS, Database, DatabaseConfig

ProblemKind = Literal["gap", "reorder", "altered", "duplicate", "unreadable", "missing_tail"]


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    kind: ProblemKind
    seq: int | None
    event_id: str | None
    message: str


@dataclass(slots=True)
class VerifyReport:
    """``ok`` is True only when every position 1..last is present once, in order, and hashes match."""

    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    duplicates_ignored: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> VerifyProblem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.checked} events, chain positions 1..{self.last_seq}, tip {self.last_hash}"
        problem = self.problems[0]
        return f"FAILED at seq {problem.seq} ({problem.kind}): {problem.message}"


def verify(events: Sequence[ChainedEvent], *, anchors: Mapping[int, str] | None = None) -> VerifyReport:
    """Recompute the chain over ``events`` in stored order and report the first problem.

    ``anchors`` (seq -> hash, as the database's ``audit_chain`` holds them) catch a rewrite that
    recomputed every later hash, and a tail that was cut off.
    """
    report = VerifyReport()
    stored_ids = {link.seq: link.event_id for link in events}
    seen: dict[int, str] = {}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    for link in events:
        if link.seq < expected_seq and seen.get(link.seq) == link.hash and _hash_ok(link):
            report.duplicates_ignored += 1
            continue
        problem = _check_link(link, expected_seq, prev_hash, seen, stored_ids, anchors)
        if problem is not None:
            report.problems.append(problem)
            return report
        seen[link.seq] = link.hash
        prev_hash = link.hash
        expected_seq += 1
        report.checked += 1
        report.last_seq = link.seq
        report.last_hash = link.hash
    if anchors:
        last_anchor = max(anchors)
        if last_anchor > report.last_seq:
            report.problems.append(
                VerifyProblem(
                    "missing_tail",
                    report.last_seq + 1,
                    None,
                    f"the database chain reaches seq {last_anchor}; the sink stops at {report.last_seq}",
                )
            )
    return report


def _hash_ok(link: ChainedEvent) -> bool:
    try:
        return link_hash(link.prev_hash, chained_body(link.seq, link.event)) == link.hash
    except (ValueError, TypeError, UnicodeEncodeError):
        return False


def _check_link(
    link: ChainedEvent,
    expected_seq: int,
    prev_hash: str,
    seen: Mapping[int, str],
    stored_ids: Mapping[int, str],
    anchors: Mapping[int, str] | None,
) -> VerifyProblem | None:
    name = link.event_id or None
    if link.seq != expected_seq:
        if link.seq in seen:
            return VerifyProblem("duplicate", link.seq, name, f"seq {link.seq} stored twice with different content")
        if link.seq > expected_seq and expected_seq in stored_ids:
            return VerifyProblem(
                "reorder",
                link.seq,
                name,
                f"seq {link.seq} ({name}) is stored before seq {expected_seq} ({stored_ids[expected_seq]})",
            )
        if link.seq > expected_seq:
            return VerifyProblem(
                "gap",
                expected_seq,
                None,
                f"seq {expected_seq} is missing: the next stored event is seq {link.seq} ({name})",
            )
        return VerifyProblem("reorder", link.seq, name, f"seq {link.seq} ({name}) found after seq {expected_seq - 1}")
    if not _hash_ok(link):
        return VerifyProblem("altered", link.seq, name, f"event {name} at seq {link.seq} does not match its hash")
    if link.prev_hash != prev_hash:
        return VerifyProblem(
            "altered", link.seq, name, f"event {name} at seq {link.seq} does not link to the previous event"
        )
    if anchors is not None and link.seq in anchors and anchors[link.seq] != link.hash:
        return VerifyProblem(
            "altered", link.seq, name, f"event {name} at seq {link.seq} differs from the database's chain"
        )
    return None


async def verify_sink(sink: AuditSink, *, anchors: Mapping[int, str] | None = None) -> VerifyReport:
    """Read everything ``sink`` holds and verify it. The CLI exits non-zero unless ``report.ok``."""
    try:
        events = await sink.read_all()
    except CorruptRecord as exc:
        report = VerifyReport()
        report.problems.append(VerifyProblem("unreadable", None, None, str(exc)))
        return report
    except SinkError as exc:
        report = VerifyReport()
        report.problems.append(VerifyProblem("unreadable", None, None, f"{sink.name}: {exc}"))
        return report
    return verify(events, anchors=anchors)


@dataclass(slots=True)
class VerifyResults:
    """What ``payorch audit verify`` prints and whether it exits 0."""

    reports: dict[str, VerifyReport] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ok: bool = True


async def verify_configured(
    config: AuditConfig, *, data_dir: Path, database_url: str | None, sink: str | None = None
) -> VerifyResults:
    """Verify the configured sinks (or the one named ``sink``) against the database's chain.

    Each sink is anchored to the database's hashes up to its own cursor (what it acknowledged), so
    events chained but not shipped yet are not reported as a cut-off tail, while a rewritten chain or
    a tail deleted from the sink is. CloudTrail Lake cannot be read back through its channel: asked
    for by name it fails with that explanation; by default it is skipped.
    """
    results = VerifyResults()
    sinks = build_sinks(config, data_dir=data_dir)
    if sink is not None:
        sinks = [candidate for candidate in sinks if candidate.name == sink]
        if not sinks:
            configured = ", ".join(config.sink_kinds()) or "none"
            results.ok = False
            results.lines.append(f"sink {sink!r} is not configured (configured: {configured})")
            return results
    else:
        sinks = [candidate for candidate in sinks if not isinstance(candidate, CloudTrailLakeSink)]
    anchors = await _anchors(database_url, [candidate.name for candidate in sinks], results)
    for candidate in sinks:
        report = await verify_sink(candidate, anchors=None if anchors is None else anchors[candidate.name])
        results.reports[candidate.name] = report
        results.lines.append(f"{candidate.name}: {report.summary()}")
        results.ok = results.ok and report.ok
    if not sinks:
        results.ok = False
        results.lines.append("no readable sink is configured (CloudTrail Lake is read through an event data store)")
    return results


async def _anchors(
    database_url: str | None, sink_names: Sequence[str], results: VerifyResults
) -> dict[str, dict[int, str]] | None:
    if database_url is None:
        return None
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        async with db.transaction() as transaction:
            cursors = await audit_store.get_cursors(transaction)
            hashes = await audit_store.chain_hashes(transaction)
    except DATABASE_ERRORS as exc:
        results.lines.append(f"database unreachable ({type(exc).__name__}): verified without its chain hashes")
        return None
    finally:
        await db.close()
    return {name: {seq: h for seq, h in hashes.items() if seq <= cursors.get(name, 0)} for name in sink_names}

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
from typing import Literal

from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chained_body, link_hash
from payorch.audit.sinks.base import AuditSink, CorruptRecord, SinkError

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

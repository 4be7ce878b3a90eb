"""Re-read a sink and recompute the chain: ``payorch audit verify`` (DESIGN.md section 8).

Problems are named by chain position and event id:
- ``gap``: a position is missing (an event or a whole batch was deleted);
- ``reorder``: a position appears out of order (events moved within or across batches);
- ``altered``: an event's content no longer hashes to its recorded hash, or its ``prev_hash`` does
  not match the previous link, or it differs from the database's record of that position;
- ``duplicate``: the same position stored twice with different content;
- ``missing_tail``: the database's chain (up to what the sink acknowledged) goes on past the sink's
  last position;
- ``not_in_database``: the sink holds a position the database's chain does not have (a correctly
  chained event appended past the database's tip is caught here).
Identical re-deliveries of a position (a batch re-shipped after an outage) are not problems.

The chain is walked once in stored order, stopping at the first structural problem; then every
position is compared with the database on its own, so that every missing, extra or differing
position is reported (as runs of consecutive positions), not only the first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from payorch.audit import trail
from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chained_body, link_hash
from payorch.audit.config import AuditConfig
from payorch.audit.events import AuditAction, AuditEvent, Resource, record
from payorch.audit.sinks import CloudTrailLakeSink, build_sinks
from payorch.audit.sinks.base import AuditSink, CorruptRecord, SinkError
from payorch.storage import audit as audit_store
from payorch.storage.database import DATABASE_ERRORS, Database, DatabaseConfig
from payorch.storage.sql import Connection

ProblemKind = Literal["gap", "reorder", "altered", "duplicate", "unreadable", "missing_tail", "not_in_database"]


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    kind: ProblemKind
    seq: int | None
    event_id: str | None
    message: str
    through: int | None = None
    """The last position of a run of consecutive positions with this problem (None: just ``seq``)."""

    def positions(self) -> str:
        if self.seq is None:
            return "-"
        return f"{self.seq}-{self.through}" if self.through not in (None, self.seq) else str(self.seq)


@dataclass(slots=True)
class VerifyReport:
    """``ok`` is True only when every position 1..last is present once, in order, hashes match, and
    (with the database's chain) no position is missing, extra or different."""

    checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    duplicates_ignored: int = 0
    unshipped: int = 0
    """Positions the database has chained past what the sink acknowledged: not yet shipped, not a problem."""
    problems: list[VerifyProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> VerifyProblem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            text = f"ok: {self.checked} events, chain positions 1..{self.last_seq}, tip {self.last_hash}"
            return text + (f"; {self.unshipped} chained events not shipped to it yet" if self.unshipped else "")
        problem = self.problems[0]
        return f"FAILED at seq {problem.seq} ({problem.kind}): {problem.message}"

    def further_problems(self) -> list[str]:
        """One line per problem after the first (the first is in ``summary``)."""
        return [f"also at seq {p.positions()} ({p.kind}): {p.message}" for p in self.problems[1:]]


def verify(
    events: Sequence[ChainedEvent],
    *,
    anchors: Mapping[int, str] | None = None,
    known: Mapping[int, str] | None = None,
) -> VerifyReport:
    """Recompute the chain over ``events`` in stored order and report every problem.

    ``anchors`` (seq -> hash, as the database's ``audit_chain`` holds them) are the positions the sink
    must hold, each with that hash: they catch a rewrite that recomputed every later hash, and a
    deleted event or tail. ``known`` is the database's whole chain (default: ``anchors``): a stored
    position outside it was never chained by payorch (an event appended past the tip).
    """
    report = _walk(events, anchors)
    if known is None:
        known = anchors
    if anchors is not None or known is not None:
        _compare_positions(report, events, anchors or {}, known or {})
    return report


def _walk(events: Sequence[ChainedEvent], anchors: Mapping[int, str] | None) -> VerifyReport:
    """The chain in stored order, up to the first problem in it."""
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
    return report


def _compare_positions(
    report: VerifyReport, events: Sequence[ChainedEvent], anchors: Mapping[int, str], known: Mapping[int, str]
) -> None:
    """Every position on its own against the database: missing, extra, or not what it chained."""
    stored: dict[int, ChainedEvent] = {}
    altered: list[int] = []
    for link in events:
        stored.setdefault(link.seq, link)
        expected = known.get(link.seq)
        if not _hash_ok(link) or (expected is not None and expected != link.hash):
            altered.append(link.seq)
    last_stored = max(stored, default=0)
    acknowledged = max(anchors, default=0)
    missing = sorted(seq for seq in anchors if seq not in stored)
    extra = sorted(seq for seq in stored if seq not in known)
    tip = max(known, default=0)
    report.unshipped = sum(1 for seq in known if seq > acknowledged and seq not in stored)
    found: list[VerifyProblem] = []
    for first, last in _runs(missing):
        if first > last_stored:
            message = f"the database chain reaches seq {acknowledged}; the sink stops at {last_stored}"
            found.append(VerifyProblem("missing_tail", first, None, message, last))
        else:
            found.append(VerifyProblem("gap", first, None, _count(first, last) + " the database has are missing", last))
    for first, last in _runs(extra):
        name = stored[first].event_id or None
        message = (
            f"{_count(first, last)} ({name} first) are not in the database's chain, which ends at seq {tip}: "
            "events the shipper never chained"
        )
        found.append(VerifyProblem("not_in_database", first, name, message, last))
    for first, last in _runs(sorted(set(altered))):
        name = stored[first].event_id or None
        message = f"{_count(first, last)} ({name} first) do not match their hash or the database's chain"
        found.append(VerifyProblem("altered", first, name, message, last))
    report.problems = _merged(report.problems, found)


def _merged(walked: list[VerifyProblem], found: list[VerifyProblem]) -> list[VerifyProblem]:
    """The walk's first problem, widened by a run of the same kind that contains it; then the rest,
    by position."""
    problems = list(walked)
    for problem in found:
        same = next((p for p in problems if p.kind == problem.kind and _contains(problem, p.seq)), None)
        if same is None:
            problems.append(problem)
        elif (problem.through or problem.seq or 0) > (same.through or same.seq or 0):
            problems[problems.index(same)] = dataclasses.replace(same, through=problem.through)
    head, rest = problems[:1], problems[1:]
    return head + sorted(rest, key=lambda p: (p.seq or 0, p.kind))


def _contains(run: VerifyProblem, seq: int | None) -> bool:
    if seq is None or run.seq is None:
        return False
    return run.seq <= seq <= (run.through if run.through is not None else run.seq)


def _runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted positions as (first, last) runs of consecutive numbers."""
    runs: list[tuple[int, int]] = []
    for seq in positions:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _count(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"{last - first + 1} positions, seq {first}-{last},"


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
                link.seq - 1,
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


async def verify_sink(
    sink: AuditSink, *, anchors: Mapping[int, str] | None = None, known: Mapping[int, str] | None = None
) -> VerifyReport:
    """Read everything ``sink`` holds and verify it (``verify``). The CLI exits non-zero unless ``report.ok``."""
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
    return verify(events, anchors=anchors, known=known)


@dataclass(slots=True)
class VerifyResults:
    """What ``payorch audit verify`` prints and whether it exits 0."""

    reports: dict[str, VerifyReport] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ok: bool = True
    database_reached: bool = False
    """Whether the sinks were compared with the database's chain."""


@dataclass(frozen=True, slots=True)
class _DatabaseChain:
    hashes: dict[int, str]
    cursors: dict[str, int]

    def acknowledged_by(self, sink: str) -> dict[int, str]:
        last = self.cursors.get(sink, 0)
        return {seq: digest for seq, digest in self.hashes.items() if seq <= last}


async def verify_configured(
    config: AuditConfig, *, data_dir: Path, database_url: str | None, sink: str | None = None
) -> VerifyResults:
    """Verify the configured sinks (or the one named ``sink``) against the database's chain.

    Each sink must hold every position up to its own cursor (what it acknowledged), so events chained
    but not shipped yet are not reported as a cut-off tail, while a rewritten chain or a tail deleted
    from the sink is; and it must hold no position the database's chain lacks. CloudTrail Lake cannot
    be read back through its channel: asked for by name it fails with that explanation; by default it
    is skipped.
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
    chain = await _database_chain(database_url, results)
    results.database_reached = chain is not None
    for candidate in sinks:
        if chain is None:
            report = await verify_sink(candidate)
        else:
            report = await verify_sink(candidate, anchors=chain.acknowledged_by(candidate.name), known=chain.hashes)
        results.reports[candidate.name] = report
        results.lines.append(f"{candidate.name}: {report.summary()}")
        results.lines.extend(f"{candidate.name}: {line}" for line in report.further_problems())
        results.ok = results.ok and report.ok
    if not sinks:
        results.ok = False
        results.lines.append("no readable sink is configured (CloudTrail Lake is read through an event data store)")
    return results


def verification_event(results: VerifyResults, sink: str | None) -> AuditEvent:
    """``audit_trail.verified``: who read the trail, from which host, which sinks and what was found
    (reading audit logs is itself an audited action, PCI DSS 10.2.1.3)."""
    found = {
        name: report.first_problem.kind if report.first_problem else "ok" for name, report in results.reports.items()
    }
    return trail.cli_event(
        AuditAction.AUDIT_TRAIL_VERIFIED,
        Resource(type="audit_trail", id=sink or "all"),
        outcome="success" if results.ok else "failure",
        sinks=found,
    )


async def record_verification(connection: Connection, results: VerifyResults, event: AuditEvent) -> None:
    """Keep each sink's report (the dashboard's Audit page shows the last) and the run's audit event,
    in the connection's transaction."""
    for sink, report in results.reports.items():
        await audit_store.record_verification(
            connection,
            sink=sink,
            ok=report.ok,
            checked=report.checked,
            last_seq=report.last_seq,
            summary=report.summary(),
            verified_by=event.actor.user or "unknown",
        )
    await record(connection, event)


async def _database_chain(database_url: str | None, results: VerifyResults) -> _DatabaseChain | None:
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
    return _DatabaseChain(hashes, cursors)

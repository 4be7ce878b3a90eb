"""verify against the database's chain: every position a sink has that the database lacks, and every
position the database has (up to what the sink acknowledged) that the sink lacks, is reported."""

from __future__ import annotations

from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chain_events
from payorch.audit.verify import verify


def events(first: int, count: int, *, note: str = "real") -> list[dict]:
    return [
        {"id": f"aud_{i:026d}", "action": "charge.created", "details": {"amount": i, "note": note}}
        for i in range(first, first + count)
    ]


def database(count: int) -> list[ChainedEvent]:
    return chain_events(GENESIS_HASH, 1, events(1, count))


def hashes(links: list[ChainedEvent]) -> dict[int, str]:
    return {link.seq: link.hash for link in links}


def forged_after(links: list[ChainedEvent], count: int) -> list[ChainedEvent]:
    """Correctly chained events appended after ``links``' tip, as a forger with write access would."""
    return chain_events(links[-1].hash, links[-1].seq + 1, events(links[-1].seq + 1, count, note="forged"))


def test_events_appended_past_the_database_tip_are_reported() -> None:
    chain = database(10)
    forged = forged_after(chain, 2)
    stored = chain + forged
    assert verify(stored).ok  # self-consistent: only the database can tell

    report = verify(stored, anchors=hashes(chain))
    assert not report.ok
    [problem] = report.problems
    assert (problem.kind, problem.seq, problem.through) == ("not_in_database", 11, 12)
    assert problem.event_id == forged[0].event_id
    assert "FAILED at seq 11 (not_in_database)" in report.summary()
    assert forged[0].event_id in report.summary()


def test_past_the_tip_is_caught_even_beyond_a_sinks_cursor() -> None:
    """verify_configured anchors a sink to its cursor but knows the whole chain: a forged event past
    the tip is reported however far the sink's cursor is behind."""
    chain = database(10)
    stored = chain + forged_after(chain, 1)
    report = verify(stored, anchors=hashes(chain[:4]), known=hashes(chain))
    assert [(p.kind, p.seq) for p in report.problems] == [("not_in_database", 11)]


def test_a_forged_event_between_the_cursor_and_the_tip_is_altered() -> None:
    chain = database(10)
    forged = chain_events(chain[5].hash, 7, events(7, 1, note="forged"))
    report = verify([*chain[:6], *forged], anchors=hashes(chain[:6]), known=hashes(chain))
    assert [(p.kind, p.seq) for p in report.problems] == [("altered", 7)]
    assert report.unshipped == 3  # 8, 9, 10: chained, not shipped yet, not a problem


def test_unshipped_positions_are_not_a_problem() -> None:
    chain = database(10)
    report = verify(chain[:7], anchors=hashes(chain[:7]), known=hashes(chain))
    assert report.ok
    assert report.unshipped == 3
    assert "3 chained events not shipped to it yet" in report.summary()


def test_every_missing_run_is_reported_not_only_the_first() -> None:
    chain = database(30)
    stored = chain[:4] + chain[9:19] + chain[22:25]  # 5-9 and 20-22 deleted, 26-30 cut off
    report = verify(stored, anchors=hashes(chain))
    runs = [(p.kind, p.seq, p.through) for p in report.problems]
    assert runs == [("gap", 5, 9), ("gap", 20, 22), ("missing_tail", 26, 30)]
    assert report.summary().startswith("FAILED at seq 5 (gap)")
    assert report.further_problems() == [
        f"also at seq 20-22 (gap): {report.problems[1].message}",
        f"also at seq 26-30 (missing_tail): {report.problems[2].message}",
    ]


def test_every_position_a_rewrite_touched_is_reported() -> None:
    chain = database(10)
    rewritten = [dict(link.event) for link in chain]
    rewritten[3]["details"] = {"amount": 0}
    forged = chain_events(GENESIS_HASH, 1, rewritten)
    report = verify(forged, anchors=hashes(chain))
    assert [(p.kind, p.seq, p.through) for p in report.problems] == [("altered", 4, 10)]


def test_extra_and_missing_positions_together() -> None:
    chain = database(10)
    stored = chain[:3] + chain[5:] + forged_after(chain, 3)
    report = verify(stored, anchors=hashes(chain))
    assert [(p.kind, p.seq, p.through) for p in report.problems] == [("gap", 4, 5), ("not_in_database", 11, 13)]


def test_a_sink_holding_positions_of_an_empty_database_is_reported() -> None:
    report = verify(database(3), anchors={}, known={})
    assert [(p.kind, p.seq, p.through) for p in report.problems] == [("not_in_database", 1, 3)]

import hashlib
import itertools
import json

import pytest

from payorch.audit.chain import (
    GENESIS_HASH,
    ChainedEvent,
    canonical_json,
    chain_events,
    chained_body,
    link_hash,
)
from payorch.audit.verify import verify


def events(n: int) -> list[dict]:
    return [
        {"id": f"aud_{i:026d}", "action": "charge.created", "details": {"amount": i, "note": "café"}}
        for i in range(1, n + 1)
    ]


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == '{"a":{"c":"é","d":[1,2]},"b":1}'.encode()
    with pytest.raises(ValueError, match="Out of range"):
        canonical_json({"x": float("nan")})


def test_hash_is_sha256_of_prev_hash_then_canonical_event_with_seq():
    event = {"id": "aud_1", "action": "charge.created"}
    [link] = chain_events(GENESIS_HASH, 1, [event])
    expected = hashlib.sha256(
        GENESIS_HASH.encode() + b'{"event":{"action":"charge.created","id":"aud_1"},"seq":1}'
    ).hexdigest()
    assert link.prev_hash == "0" * 64
    assert link.hash == expected
    assert link_hash(link.prev_hash, chained_body(1, event)) == expected


def test_links_follow_each_other_and_survive_a_json_round_trip():
    links = chain_events(GENESIS_HASH, 1, events(5))
    for before, after in itertools.pairwise(links):
        assert after.prev_hash == before.hash
        assert after.seq == before.seq + 1
    assert [ChainedEvent.from_json(link.to_json()) for link in links] == links
    assert verify(links).ok


def test_verify_detects_an_altered_event_and_names_it():
    links = chain_events(GENESIS_HASH, 1, events(10))
    tampered = dict(links[4].event, details={"amount": 999_999, "note": "café"})
    links[4] = ChainedEvent(links[4].seq, links[4].prev_hash, links[4].hash, tampered)
    report = verify(links)
    assert not report.ok
    problem = report.first_problem
    assert problem.kind == "altered"
    assert problem.seq == 5
    assert problem.event_id == links[4].event_id
    assert links[4].event_id in report.summary()


def test_verify_detects_a_rewrite_with_recomputed_hashes_against_database_anchors():
    original = chain_events(GENESIS_HASH, 1, events(10))
    forged_events = [dict(link.event) for link in original]
    forged_events[6]["details"] = {"amount": 0}
    forged = chain_events(GENESIS_HASH, 1, forged_events)
    assert verify(forged).ok  # self-consistent: only an anchor can tell
    report = verify(forged, anchors={link.seq: link.hash for link in original})
    assert report.first_problem.kind == "altered"
    assert report.first_problem.seq == 7


def test_verify_detects_a_deleted_event():
    links = chain_events(GENESIS_HASH, 1, events(10))
    del links[3]
    problem = verify(links).first_problem
    assert problem.kind == "gap"
    assert problem.seq == 4
    assert links[3].event_id in problem.message  # the event after the hole


def test_verify_detects_a_reorder():
    links = chain_events(GENESIS_HASH, 1, events(10))
    links[2], links[3] = links[3], links[2]
    problem = verify(links).first_problem
    assert problem.kind == "reorder"
    assert problem.seq == 4
    assert problem.event_id == links[2].event_id


def test_verify_detects_a_cut_tail_against_anchors():
    links = chain_events(GENESIS_HASH, 1, events(10))
    report = verify(links[:8], anchors={link.seq: link.hash for link in links})
    assert report.first_problem.kind == "missing_tail"
    assert report.first_problem.seq == 9


def test_identical_redelivery_is_not_a_problem_but_a_conflicting_one_is():
    links = chain_events(GENESIS_HASH, 1, events(6))
    redelivered = links[:4] + links[2:]  # batch 1..4 then an overlapping re-ship 3..6
    report = verify(redelivered)
    assert report.ok
    assert report.duplicates_ignored == 2
    assert report.checked == 6

    conflicting = ChainedEvent(3, links[2].prev_hash, "f" * 64, links[2].event)
    problem = verify([*links[:4], conflicting, *links[3:]]).first_problem
    assert problem.kind == "duplicate"
    assert problem.seq == 3


def test_from_json_refuses_non_records():
    with pytest.raises(ValueError, match="not a JSON object"):
        ChainedEvent.from_json("[]")
    with pytest.raises(ValueError, match="seq"):
        ChainedEvent.from_json(json.dumps({"seq": "1"}))

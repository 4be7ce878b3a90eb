import os
import stat

import pytest

from payorch.audit.chain import GENESIS_HASH, chain_events
from payorch.audit.sinks.base import SinkError
from payorch.audit.sinks.local import LocalDirectorySink
from payorch.audit.verify import verify_sink


def links(n: int, start: int = 1, prev: str = GENESIS_HASH):
    return chain_events(
        prev, start, [{"id": f"aud_{i:026d}", "action": "refund.created"} for i in range(start, start + n)]
    )


async def test_batches_are_read_only_files_named_by_chain_position(tmp_path):
    sink = LocalDirectorySink(tmp_path / "audit")
    await sink.check()
    first = links(3)
    second = links(2, start=4, prev=first[-1].hash)
    await sink.put_batch(first)
    await sink.put_batch(second)
    names = sorted(p.name for p in (tmp_path / "audit").iterdir())
    assert names == ["000000000001-000000000003.jsonl", "000000000004-000000000005.jsonl"]
    for name in names:
        mode = stat.S_IMODE(os.stat(tmp_path / "audit" / name).st_mode)
        assert mode == 0o444
    assert await sink.read_all() == first + second
    report = await verify_sink(sink)
    assert report.ok
    assert report.last_seq == 5


async def test_reshipping_the_same_batch_is_a_no_op_and_a_different_one_is_refused(tmp_path):
    sink = LocalDirectorySink(tmp_path)
    batch = links(3)
    await sink.put_batch(batch)
    await sink.put_batch(batch)
    other = chain_events(GENESIS_HASH, 1, [{"id": f"aud_{i:026d}", "action": "x.y"} for i in range(3)])
    with pytest.raises(SinkError, match="different content"):
        await sink.put_batch(other)
    assert await sink.read_all() == batch


async def test_tampering_with_a_file_is_named_by_verify(tmp_path):
    sink = LocalDirectorySink(tmp_path)
    batch = links(4)
    await sink.put_batch(batch)
    path = next(tmp_path.iterdir())
    os.chmod(path, 0o644)  # the tamperer has to do this first
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("refund.created", "refund.canceled")
    path.write_text("\n".join(lines) + "\n")
    report = await verify_sink(sink)
    assert report.first_problem.kind == "altered"
    assert report.first_problem.event_id == batch[1].event_id


async def test_a_garbled_line_is_reported_with_its_location(tmp_path):
    sink = LocalDirectorySink(tmp_path)
    await sink.put_batch(links(2))
    path = next(tmp_path.iterdir())
    os.chmod(path, 0o644)
    path.write_text(path.read_text() + "not json\n")
    report = await verify_sink(sink)
    assert report.first_problem.kind == "unreadable"
    assert f"{path} line 3" in report.first_problem.message


def test_a_batch_reads_back_whatever_line_breaks_its_strings_hold() -> None:
    """JSON keeps U+2028, U+0085, form feeds and the like raw inside strings: a batch is split on
    "\\n" alone, or an event holding one could be written and never read back."""
    from payorch.audit.chain import GENESIS_HASH, chain_events
    from payorch.audit.sinks.base import decode_batch, encode_batch

    odd = "a\nb\rc\x85d\x0be\x0cf\u2028g\u2029h\r\ni\x1cj\x1dk\x1el"
    events = chain_events(
        GENESIS_HASH, 1, [{"id": "aud_1", "resource": {"type": "charge", "id": odd}}, {"id": "aud_2"}]
    )
    assert decode_batch("batch", encode_batch(events)) == events

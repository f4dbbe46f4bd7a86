"""A process's WalIndex takes the records its own writer appended from the writer (WalWriter.take_fed)
instead of reading them back from the file: it must end up knowing exactly what an index that reads the
files knows, whatever happened between two refreshes."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.clock import FakeClock
from machina.queue import faults, wal
from machina.queue.wal import WalWriter, encode_job, list_segments
from machina.queue.walindex import WalIndex

TTL_MS = 3_600_000
JOB = b'{"goal_id":"goal.X.v1"}'


@pytest.fixture
def wal_dir(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "wal")
    faults.hook = None


class Fed:
    """A writer and its process's index, which has refreshed once (so the writer keeps what it appends)."""

    def __init__(self, wal_dir: str) -> None:
        self.clock = FakeClock()
        self.writer = WalWriter(wal_dir, crc=True, fsync=False, clock=self.clock)
        self.index = make_index(wal_dir, self.clock, self.writer)
        self.index.refresh()


@pytest.fixture
def fed(wal_dir: str) -> Iterator[Fed]:
    made = Fed(wal_dir)
    yield made
    made.writer.close()


def make_index(wal_dir: str, clock: FakeClock, writer: WalWriter | None) -> WalIndex:
    return WalIndex(wal_dir, clock=clock, ttl_ms=TTL_MS, fsync=False, writer=writer)


def enq(writer: WalWriter, clock: FakeClock, n: int, rid: str | None = None) -> str:
    """A job's ENQ record as the queue commits it; its name."""
    name = f"p5000_rq_{int(clock.time() * 1000):013d}_{n:010x}.json"
    record: dict[str, Any] = {"t": "ENQ", "ts": int(clock.time() * 1000), "name": name, "prio": 5000}
    if rid is not None:
        record.update(rid=rid, sha=f"{n:064x}")
    segment = writer.commit_append(encode_job(record, JOB, True), record)
    writer.release(segment)
    return name


def known(index: WalIndex) -> tuple[Any, ...]:
    index.refresh()
    return dict(index.entries), dict(index.counts), dict(index.cancelled), dict(index.offsets)


def from_the_files(wal_dir: str, clock: FakeClock) -> tuple[Any, ...]:
    return known(make_index(wal_dir, clock, None))


def test_fed_records_give_what_reading_the_files_gives(fed: Fed, wal_dir: str) -> None:
    clock, writer, index = fed.clock, fed.writer, fed.index
    names = [enq(writer, clock, i, rid=f"r{i}" if i % 2 else None) for i in range(20)]
    writer.append({"t": "UNENQ", "ts": 1, "name": names[3], "rid": "r3"})
    writer.append({"t": "PURGE", "ts": 2, "n": 2, "names": [names[4], names[5]]})
    writer.append({"t": "DONE", "ts": 3, "file": names[6], "w": "1"})
    ours = known(index)
    assert ours == from_the_files(wal_dir, clock)
    assert "r1" in ours[0] and "r3" not in ours[0]
    assert ours[1] == {"ENQ": 20, "UNENQ": 1, "PURGE": 2, "DONE": 1}


def test_fed_records_are_not_read_back(fed: Fed, wal_dir: str) -> None:
    """What shows the file is not read: a record rewritten in the file after the append (same length) is
    still known as it was appended."""
    clock, writer, index = fed.clock, fed.writer, fed.index
    enq(writer, clock, 1, rid="aaaa")
    (segment,) = list_segments(wal_dir)
    path = os.path.join(wal_dir, segment)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data.replace(b'"rid":"aaaa"', b'"rid":"bbbb"'))
    index.refresh()
    assert set(index.entries) == {"aaaa"}


def test_a_record_that_could_not_be_written_is_not_fed(fed: Fed, wal_dir: str) -> None:
    clock, writer, index = fed.clock, fed.writer, fed.index
    enq(writer, clock, 1, rid="kept")

    def full_disk(name: str, context: dict[str, Any]) -> None:
        if name == "wal.append":
            raise OSError(errno.ENOSPC, "No space left on device")

    faults.hook = full_disk
    with pytest.raises(OSError):
        enq(writer, clock, 2, rid="lost")
    faults.hook = None
    enq(writer, clock, 3, rid="after")
    ours = known(index)
    assert set(ours[0]) == {"kept", "after"}
    assert ours == from_the_files(wal_dir, clock)


def test_past_fed_max_the_index_reads_the_rest_from_the_file(fed: Fed, wal_dir: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(wal, "FED_MAX", 5)
    clock, writer, index = fed.clock, fed.writer, fed.index
    for i in range(12):  # more than FED_MAX between two refreshes: dropped, and not kept until the next
        enq(writer, clock, i, rid=f"r{i}")
    assert len(known(index)[0]) == 12
    for i in range(12, 15):  # kept again after that refresh
        enq(writer, clock, i, rid=f"r{i}")
    assert [entry[3]["rid"] for entry in writer.take_fed()] == ["r12", "r13", "r14"]
    enq(writer, clock, 15, rid="r15")  # a gap before it: what take_fed handed out above is not applied
    ours = known(index)
    assert len(ours[0]) == 16
    assert ours == from_the_files(wal_dir, clock)


def test_fed_records_a_checkpoint_covered_are_skipped_and_the_rest_still_taken(fed: Fed, wal_dir: str) -> None:
    """Another process's checkpoint covers the first fed records: they are not counted twice, and the ones
    after it are still taken from the feed (what shows it: the file rewritten after the append is not what
    the index knows)."""
    clock, writer, index = fed.clock, fed.writer, fed.index
    for i in range(4):
        enq(writer, clock, i, rid=f"r{i}")
    assert make_index(wal_dir, clock, None).checkpoint()
    enq(writer, clock, 4, rid="r4")
    (segment,) = list_segments(wal_dir)
    path = Path(wal_dir) / segment
    path.write_bytes(path.read_bytes().replace(b'"rid":"r4"', b'"rid":"x4"'))
    index.refresh()
    assert set(index.entries) == {"r0", "r1", "r2", "r3", "r4"}
    assert index.counts["ENQ"] == 5


def test_a_rotation_feeds_each_segment_its_own_records(fed: Fed, wal_dir: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 600)
    clock, writer, index = fed.clock, fed.writer, fed.index
    for i in range(10):
        clock.advance(0.01)
        enq(writer, clock, i, rid=f"r{i}")
    assert len(list_segments(wal_dir)) > 2
    ours = known(index)
    assert len(ours[0]) == 10
    assert ours == from_the_files(wal_dir, clock)

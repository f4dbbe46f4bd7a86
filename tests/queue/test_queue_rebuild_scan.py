"""The rebuild's scan: presence among a few stems finds what the full scan finds, and a segment's records are
decoded as iterated (a checkpoint settling a 4 MiB segment of a 200k-job queue holds neither all the queue's
names nor all the segment's records: issue 16's flat memory)."""

from __future__ import annotations

import os
from pathlib import Path

from machina.queue.names import JobRef
from machina.queue.rebuild import PRESENCE_ORDER, present_stems, rebuild_missing
from machina.queue.wal import SegmentRecords, encode, encode_job, scan_segment


def _dirs(tmp_path: Path) -> dict[str, str]:
    dirs = {state: str(tmp_path / state) for state in (*PRESENCE_ORDER, "tmp")}
    for path in dirs.values():
        os.makedirs(path)
    return dirs


def _touch(path: str) -> None:
    with open(path, "wb"):
        pass


def test_presence_among_some_stems_is_the_full_scan_restricted_to_them(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    refs = [JobRef(5000, 1764930000000 + i, f"{i:04x}abcdef", "0badf00d" if i % 2 else None) for i in range(12)]
    _touch(os.path.join(dirs["inbox"], refs[0].file))
    _touch(os.path.join(dirs["processing"], refs[1].next_attempt().file))
    _touch(os.path.join(dirs["out"], refs[2].result_file()))
    _touch(os.path.join(dirs["retry"], refs[3].next_attempt().retry_file(1764930099999)))
    _touch(os.path.join(dirs["done"], refs[4].file))
    _touch(os.path.join(dirs["dlq"], refs[5].with_attempt(7).file))
    # not a job's file, though it starts like refs[6]'s: never taken for it
    _touch(os.path.join(dirs["inbox"], refs[6].stem + ".json.tmp"))
    _touch(os.path.join(dirs["inbox"], "notes.txt"))
    among = {ref.stem for ref in refs[::2]} | {refs[1].stem, refs[3].stem}
    full = present_stems(dirs)
    assert full == {ref.stem for ref in refs[:6]}
    assert present_stems(dirs, among) == full & among


def test_segment_records_stop_where_a_scan_stops_and_can_be_read_twice(tmp_path: Path) -> None:
    lines = [encode({"t": "CLAIM", "ts": 1, "file": "x"}, crc=True) for _ in range(3)]
    path = tmp_path / "seg.wal"
    path.write_bytes(b"".join(lines) + b'{"t":"CLAIM","ts":1,"crc":"00000000"}\n' + lines[0])
    scan = scan_segment(str(path), 0)
    records = SegmentRecords(path.read_bytes(), 0)
    assert list(records) == scan.records == list(records)
    assert records.read_through and records.end == scan.end == sum(len(line) for line in lines)


def test_rebuild_places_only_the_missing_job_from_records_it_reads_as_it_goes(tmp_path: Path) -> None:
    dirs = _dirs(tmp_path)
    refs = [JobRef(5000, 1764930000000 + i, f"{i:04x}abcdef") for i in range(4)]
    body = b'{"goal_id":"goal.NOOP.v1"}'
    data = b"".join(encode_job({"t": "ENQ", "ts": 1, "name": ref.name, "prio": 5000}, body, True) for ref in refs)
    _touch(os.path.join(dirs["inbox"], refs[0].file))
    _touch(os.path.join(dirs["out"], refs[1].result_file()))
    records = SegmentRecords(data, 0)
    assert rebuild_missing(records, dirs, {refs[3].name: 1}) == 1  # refs[3] was cancelled (UNENQ)
    assert (Path(dirs["inbox"]) / refs[2].file).read_bytes() == body
    assert not (Path(dirs["inbox"]) / refs[3].file).exists()
    assert rebuild_missing(SegmentRecords(data, 0), dirs, {}) == 1  # now only refs[3] is missing

"""Memory streams: names, typed-record schemas, locked appends from many processes, torn tails."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from machina.clock import FakeClock
from machina.memory.schemas import TYPED_STREAMS, record_problem
from machina.memory.streams import StreamError, append, check_name, read_lines, stream_names

EXPERIENCE = {
    "user_request": "scan data/app.log",
    "tool_used": "AID.ERROR_SCAN.v1",
    "success": True,
    "elapsed_sec": 0.2,
}


@pytest.mark.parametrize("name", ["", "a" * 33, "Notes", "../etc", "a-b", "a.b", "notes\n", "ünicode"])
def test_bad_stream_names_are_refused(name: str) -> None:
    with pytest.raises(StreamError, match="not a memory stream name"):
        check_name(name)


def test_good_stream_names() -> None:
    for name in ("notes", "a" * 32, "team_7"):
        assert check_name(name) == name


def test_the_six_typed_streams_each_have_a_schema() -> None:
    assert set(TYPED_STREAMS) == {"experiences", "insights", "skills", "knowledge", "entities", "relations"}
    assert record_problem("experiences", EXPERIENCE) is None
    assert "elapsed_sec" in (record_problem("experiences", {**EXPERIENCE, "elapsed_sec": -1}) or "")
    assert "code_hash" in (
        record_problem("skills", {"name": "x", "lang": "python", "code": "", "code_hash": "z"}) or ""
    )
    assert record_problem("notes", {"anything": 1}) is None  # free streams have no schema


def test_append_writes_one_line_with_the_injected_time(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    offset = append(str(tmp_path), "experiences", EXPERIENCE, request_id="rq-1", clock=clock)
    assert offset == 0
    (line,) = (tmp_path / "experiences.jsonl").read_text().splitlines()
    assert json.loads(line) == {"ts": 1_800_000_000.0, "request_id": "rq-1", "record": EXPERIENCE}
    assert oct((tmp_path / "experiences.jsonl").stat().st_mode & 0o777) == "0o600"


def test_a_typed_record_that_breaks_its_schema_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(StreamError, match="memory/insights: record: 'type' is a required property"):
        append(str(tmp_path), "insights", {"rules": []})
    with pytest.raises(StreamError, match="needs a record or a text"):
        append(str(tmp_path), "notes")
    assert not (tmp_path / "insights.jsonl").exists() and not (tmp_path / "notes.jsonl").exists()


def test_non_finite_numbers_and_oversized_lines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        append(str(tmp_path), "notes", {"x": float("nan")})
    with pytest.raises(StreamError, match="at most"):
        append(str(tmp_path), "notes", text="x" * (1024 * 1024))


def test_after_a_torn_tail_the_next_record_starts_on_its_own_line(tmp_path: Path) -> None:
    append(str(tmp_path), "notes", text="first")
    with open(tmp_path / "notes.jsonl", "ab") as handle:
        handle.write(b'{"text": "interrupted wri')  # a writer killed mid-line
    append(str(tmp_path), "notes", text="second")
    lines = list(read_lines(str(tmp_path / "notes.jsonl")))
    assert [line.entry and line.entry.get("text") for line in lines] == ["first", None, "second"]
    assert lines[1].problem is not None and lines[1].number == 2


def _append_many(directory: str, writer: int) -> None:
    for i in range(200):
        append(directory, "notes", {"writer": writer, "i": i, "pad": "x" * (writer * 500)})


def test_appends_from_four_processes_never_interleave_or_get_lost(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = [json.loads(line)["record"] for line in (tmp_path / "notes.jsonl").read_text().splitlines()]
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(4) for i in range(200)]


def test_stream_names_lists_only_streams(tmp_path: Path) -> None:
    for name in ("notes.jsonl", "experiences.jsonl", "Bad-Name.jsonl", "other.txt"):
        (tmp_path / name).write_text("")
    os.mkdir(tmp_path / "dir.jsonl")
    assert stream_names(str(tmp_path)) == ["experiences", "notes"]
    assert stream_names(str(tmp_path / "missing")) == []

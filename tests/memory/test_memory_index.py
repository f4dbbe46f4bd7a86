"""The search index: incremental sync, rewrites noticed, BM25 + recency + MMR, FTS syntax never injected."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina.clock import FakeClock
from machina.memory.index import MemoryIndex, fts_query, mmr
from machina.memory.streams import append

DAY = 86400.0


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "memory").mkdir()
    (tmp_path / "state").mkdir()
    return str(tmp_path / "memory"), str(tmp_path / "state")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_800_000_000.0)


@pytest.fixture
def index(dirs: tuple[str, str], clock: FakeClock) -> Iterator[MemoryIndex]:
    with MemoryIndex(*dirs, clock=clock) as idx:
        yield idx


def test_sync_indexes_only_what_was_appended_since(dirs: tuple[str, str], index: MemoryIndex, clock: FakeClock) -> None:
    memory = dirs[0]
    append(memory, "notes", text="disk full on node 3", clock=clock)
    assert index.sync() == 1
    assert index.sync() == 0
    append(memory, "notes", text="disk quota exceeded", clock=clock)
    append(memory, "runbook", text="restart the disk daemon", clock=clock)
    assert index.sync() == 2
    assert {h.stream for h in index.query("disk", top_k=5)} == {"notes", "runbook"}


def test_a_line_still_being_written_waits_for_the_next_sync(dirs: tuple[str, str], index: MemoryIndex) -> None:
    memory = dirs[0]
    append(memory, "notes", text="complete")
    with open(os.path.join(memory, "notes.jsonl"), "ab") as handle:
        handle.write(b'{"text": "half')
    assert index.sync() == 1
    with open(os.path.join(memory, "notes.jsonl"), "ab") as handle:
        handle.write(b' written"}\n')
    assert index.sync() == 1
    assert [h.text for h in index.query("written")] == ["half written"]


def test_a_rewritten_stream_is_indexed_again_from_the_start(dirs: tuple[str, str], index: MemoryIndex) -> None:
    memory = dirs[0]
    for text in ("alpha one", "alpha two", "alpha three"):
        append(memory, "notes", text=text)
    index.sync()
    path = os.path.join(memory, "notes.jsonl")
    with open(path, "rb") as handle:
        lines = handle.readlines()
    tmp = path + ".new"
    with open(tmp, "wb") as handle:
        handle.writelines(lines[-1:])  # rotation keeps the tail, under a new inode
    os.replace(tmp, path)
    index.sync()
    assert [h.text for h in index.query("alpha", top_k=5)] == ["alpha three"]
    os.unlink(path)
    index.sync()
    assert index.query("alpha") == [] and index.indexed() == {}


def test_recency_breaks_ties_between_equally_relevant_entries(
    dirs: tuple[str, str], index: MemoryIndex, clock: FakeClock
) -> None:
    memory = dirs[0]
    append(memory, "notes", text="backup failed on the storage node", clock=clock)
    clock.advance(30 * DAY)
    append(memory, "notes", text="backup failed on the storage host", clock=clock)
    index.sync()
    hits = index.query("backup failed storage", top_k=2)
    assert [h.text for h in hits] == ["backup failed on the storage host", "backup failed on the storage node"]
    assert hits[0].score > hits[1].score


def test_mmr_prefers_a_different_answer_over_a_near_copy(dirs: tuple[str, str], index: MemoryIndex) -> None:
    memory = dirs[0]
    for _ in range(3):
        append(memory, "notes", text="the database is down again")  # the same text: one answer
    append(memory, "notes", text="the database is down again today")  # a near copy
    append(memory, "notes", text="the database went down after the upgrade")  # as relevant, and different
    index.sync()
    hits = index.query("database down", top_k=2)
    assert [h.text for h in hits] == ["the database is down again", "the database went down after the upgrade"]


def test_mmr_directly() -> None:
    assert mmr([0.9, 0.89, 0.5], ["a b c", "a b c", "x y z"], 2) == [0, 2]
    assert mmr([], [], 3) == []


@pytest.mark.parametrize("text", ['NEAR("a" "b")', "a OR", '"', "* AND *", "col:val", "-x ^y"])
def test_fts_syntax_in_the_query_is_only_words(dirs: tuple[str, str], index: MemoryIndex, text: str) -> None:
    append(dirs[0], "notes", text="a b x y val col")
    index.sync()
    index.query(text)  # no sqlite3.OperationalError: every word is quoted
    assert '"' not in fts_query(text).replace('""', "").replace('" OR "', "").strip('"')


def test_stream_filter_and_empty_queries(dirs: tuple[str, str], index: MemoryIndex) -> None:
    append(dirs[0], "notes", text="kernel panic")
    append(dirs[0], "runbook", text="kernel upgrade")
    index.sync()
    assert [h.stream for h in index.query("kernel", streams=["runbook"])] == ["runbook"]
    assert index.query("   ") == [] and index.query("kernel", top_k=0) == []


def test_embeddings_blend_into_relevance(dirs: tuple[str, str], index: MemoryIndex) -> None:
    append(dirs[0], "notes", text="error in module alpha")
    append(dirs[0], "notes", text="error in module beta")
    index.sync()

    def embed(texts: list[str]) -> list[list[float]]:  # "beta" points the same way as the query
        return [[1.0, 0.0] if ("beta" in t or t == "error") else [0.0, 1.0] for t in texts]

    assert index.query("error", top_k=1, embed=embed)[0].text == "error in module beta"


def test_an_index_of_another_layout_is_rebuilt(dirs: tuple[str, str]) -> None:
    append(dirs[0], "notes", text="kept in the stream")
    with MemoryIndex(*dirs) as idx:
        idx.sync()
        idx.db.execute("UPDATE meta SET value='0' WHERE key='schema'")
    with MemoryIndex(*dirs) as idx:
        assert idx.indexed() == {}
        idx.sync()
        assert [h.text for h in idx.query("stream")] == ["kept in the stream"]

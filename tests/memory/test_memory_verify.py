"""``machina memory reindex --verify`` / ``--apply`` / ``--rebuild`` and ``machina memory query|stats``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from machina.memory.index import MemoryIndex
from machina.memory.streams import append
from tests.conftest import bin_env

EXPERIENCE = {
    "user_request": "scan data/app.log",
    "tool_used": "AID.ERROR_SCAN.v1",
    "success": True,
    "elapsed_sec": 0.2,
}


def machina(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = bin_env(MACHINA_ROOT=str(root))
    return subprocess.run(["machina", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_clean_root_verifies(machina_root: Path) -> None:
    append(str(machina_root / "memory"), "experiences", EXPERIENCE)
    append(str(machina_root / "memory"), "notes", text="hello")
    result = machina(machina_root, "memory", "reindex", "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 stream(s) checked, 0 bad line(s)" in result.stderr


def test_verify_finds_a_corrupt_line_a_schema_violation_and_a_duplicate(machina_root: Path) -> None:
    memory = machina_root / "memory"
    append(str(memory), "experiences", EXPERIENCE)
    with open(memory / "experiences.jsonl", "ab") as handle:
        handle.write(b'{"ts": 1, "record": {"user_request": "x"}}\n')  # misses success, tool_used, elapsed_sec
        handle.write(b"not json\n")
    line = (memory / "experiences.jsonl").read_bytes().splitlines(keepends=True)[0]
    with open(memory / "experiences.jsonl", "ab") as handle:
        handle.write(line)  # the same bytes twice: a replayed write
    before = (memory / "experiences.jsonl").read_bytes()
    result = machina(machina_root, "memory", "reindex", "--verify")
    assert result.returncode == 1
    out = result.stdout.splitlines()
    path = memory / "experiences.jsonl"
    assert out[0].startswith(f"{path}:2: schema of experiences: record: ")
    assert out[1] == f"{path}:3: not JSON (Expecting value at column 1)"
    assert out[2] == f"{path}:4: duplicate of an earlier line (the same bytes written twice)"
    assert (memory / "experiences.jsonl").read_bytes() == before


def test_verify_finds_an_index_out_of_step_and_rebuild_mends_it(machina_root: Path) -> None:
    memory, state = str(machina_root / "memory"), str(machina_root / "state")
    for text in ("one", "two", "three"):
        append(memory, "notes", text=text)
    with MemoryIndex(memory, state) as index:
        index.sync()
        index.db.execute("DELETE FROM entries WHERE offset = (SELECT MIN(offset) FROM entries)")  # a lost row
    result = machina(machina_root, "memory", "reindex", "--verify")
    assert result.returncode == 1
    assert (
        result.stdout.strip()
        == f"index: {memory}/notes.jsonl: 2 line(s) indexed, 3 in the stream (run reindex --rebuild)"
    )
    rebuilt = machina(machina_root, "memory", "reindex", "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "rebuilt the search index: 3 line(s) from 1 stream(s)" in rebuilt.stdout
    assert machina(machina_root, "memory", "reindex", "--verify").returncode == 0


def test_an_index_behind_the_newest_appends_is_in_step(machina_root: Path) -> None:
    memory, state = str(machina_root / "memory"), str(machina_root / "state")
    append(memory, "notes", text="one")
    with MemoryIndex(memory, state) as index:
        index.sync()
    append(memory, "notes", text="two")
    assert machina(machina_root, "memory", "reindex", "--verify").returncode == 0


def test_apply_moves_schema_violations_aside_and_keeps_the_rest(machina_root: Path) -> None:
    memory = machina_root / "memory"
    append(str(memory), "insights", {"type": "tool_stats", "tool_stats": {}})
    with open(memory / "insights.jsonl", "ab") as handle:
        handle.write(b'{"ts": 1, "record": {"rules": []}}\n')
    result = machina(machina_root, "memory", "reindex", "--apply")
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [json.loads(line) for line in (memory / "insights.jsonl").read_text().splitlines()]
    assert [k["record"]["type"] for k in kept] == ["tool_stats"]
    (rejected,) = list((memory / "archive").glob("*/insights.jsonl.rejected"))
    assert rejected.read_bytes() == b'{"ts": 1, "record": {"rules": []}}\n'
    assert machina(machina_root, "memory", "reindex", "--verify").returncode == 0


def test_verify_works_on_a_read_only_index(machina_root: Path) -> None:
    append(str(machina_root / "memory"), "notes", text="x")
    with MemoryIndex(str(machina_root / "memory"), str(machina_root / "state")) as index:
        index.sync()
    index_dir = machina_root / "state" / "memory"
    mode = index_dir.stat().st_mode
    os.chmod(index_dir, 0o500)
    try:
        for f in index_dir.iterdir():
            os.chmod(f, 0o400)
        assert machina(machina_root, "memory", "reindex", "--verify").returncode == 0
    finally:
        os.chmod(index_dir, mode)


def test_usage_errors(machina_root: Path) -> None:
    assert machina(machina_root, "memory", "reindex", "--verify", "--rebuild").returncode == 64
    assert machina(machina_root, "memory", "query", "x", "--stream", "../etc").returncode == 65


def test_query_and_stats(machina_root: Path) -> None:
    memory = str(machina_root / "memory")
    append(memory, "notes", text="the deploy key lives in the vault")
    append(memory, "notes", text="lunch is at noon")
    found = machina(machina_root, "memory", "query", "deploy vault", "--json")
    assert found.returncode == 0, found.stderr
    (hit,) = [json.loads(line) for line in found.stdout.splitlines()]
    assert hit["stream"] == "notes" and hit["entry"]["text"] == "the deploy key lives in the vault"
    assert machina(machina_root, "memory", "query", "nothing matches this").returncode == 1
    stats = machina(machina_root, "memory", "stats", "--json")
    assert json.loads(stats.stdout)["streams"]["notes"]["entries"] == 2

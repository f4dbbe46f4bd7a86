"""The maintenance scripts against fixture roots: dry-run changes nothing, --apply does exactly what it
says, planted problems are caught (and secrets never printed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import bin_env
from tests.ops.supervised import script

SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4"


def snapshot(root: Path) -> dict[str, tuple[bytes, float, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- validate_aid_refs / validate_docs_refs --------------------------------------------------------------


def test_known_aids_and_patterns_pass(tmp_path) -> None:
    (tmp_path / "a.py").write_text('USE = ["AID.FILE.READ.v1", "AID.SHELL.EXEC.v1"]\nALLOW = "AID.FILE.*"\n')
    result = script("validate_aid_refs.py", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all AID references are known tools" in result.stderr


def test_a_stale_aid_is_reported_with_its_place_and_a_hint(tmp_path) -> None:
    (tmp_path / "ok.py").write_text('x = "AID.FILE.READ.v1"\n')
    (tmp_path / "stale.py").write_text('\n\ny = "AID.FILE.READ.v2"  # renamed tool\nz = "AID.NOPE.*"\n')
    result = script("validate_aid_refs.py", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{tmp_path}/stale.py:3: AID.FILE.READ.v2 is not a known tool (did you mean AID.FILE.READ.v1?)" in lines
    assert any(line.startswith(f"{tmp_path}/stale.py:4: AID.NOPE.*") for line in lines)
    assert len(lines) == 2


def test_placeholders_and_marked_examples_are_not_references(tmp_path) -> None:
    (tmp_path / "doc.py").write_text(
        '"""Patterns look like AID.X.* and names like AID.NAME.v1; AID.EXAMPLE.THING.v2 too."""\n'
        '    "aid": "AID.PLUGIN.WORD_COUNT.v1",   # aid-refs: ignore (an example plugin)\n'
    )
    assert script("validate_aid_refs.py", str(tmp_path)).returncode == 0
    (tmp_path / "doc.py").write_text('"aid": "AID.PLUGIN.WORD_COUNT.v1"\n')
    assert script("validate_aid_refs.py", str(tmp_path)).returncode == 1


def test_docs_refs_cover_markdown_and_man_pages(tmp_path) -> None:
    (tmp_path / "README.md").write_text("Use `AID.ERROR_SCAN.v1` and `AID.ERROR_SCAN.v9`.\n")
    man = tmp_path / "man"
    man.mkdir()
    (man / "x.7").write_text(".B AID.GHOST.v1\n")
    result = script("validate_docs_refs.py", str(tmp_path / "README.md"), str(man))
    assert result.returncode == 1
    assert {line.split(": ")[1].split()[0] for line in result.stdout.splitlines()} == {
        "AID.ERROR_SCAN.v9",
        "AID.GHOST.v1",
    }


def test_tools_of_the_roots_toolpacks_count_as_known(tmp_path, machina_root) -> None:
    pack = machina_root / "toolpacks" / "extra"
    pack.mkdir()
    tool = {
        "aid": "AID.EXTRA.THING.v1",
        "name": "thing",
        "tags": ["tag.extra"],
        "side_effects": ["none"],
        "deterministic": True,
        "inputs_schema": {"type": "object"},
    }
    (pack / "manifest.json").write_text(json.dumps({"pack": "extra", "tools": [tool]}))
    (tmp_path / "uses.py").write_text('"AID.EXTRA.THING.v1"\n')
    assert script("validate_aid_refs.py", str(tmp_path / "uses.py")).returncode == 1
    assert script("validate_aid_refs.py", "--root", str(machina_root), str(tmp_path / "uses.py")).returncode == 0


def test_a_missing_path_is_exit_66(tmp_path) -> None:
    result = script("validate_aid_refs.py", str(tmp_path / "absent"))
    assert result.returncode == 66 and "no such file or directory" in result.stderr


def test_this_checkout_names_only_real_tools() -> None:
    """The guardrail over the project itself: code and docs (README, man pages) name only real AIDs."""
    for name in ("validate_aid_refs.py", "validate_docs_refs.py"):
        result = script(name)
        assert result.returncode == 0, result.stdout + result.stderr


# --- security_guardrails ----------------------------------------------------------------------------------


def mcp_config(**server_env: str) -> str:
    return json.dumps(
        {
            "mcpServers": {
                "github": {"command": "gh-mcp", "env": server_env},
                "web": {"url": "https://mcp.example.com/sse", "headers": {"Authorization": "Bearer ${WEB_TOKEN}"}},
            }
        }
    )


def test_placeholders_are_clean(tmp_path) -> None:
    (tmp_path / "mcp_servers.json").write_text(mcp_config(GITHUB_TOKEN="${GITHUB_TOKEN}", TOKEN_URL="https://x/y"))
    result = script("security_guardrails.py", str(tmp_path), "--env-file", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({"API_KEY": SECRET}, "OpenAI/Anthropic-style key"),
        ({"GITHUB_TOKEN": "ghp_" + "a1B2" * 9}, "GitHub token"),
        ({"HEADER": "Authorization: Bearer abcdef0123456789"}, "bearer token"),
        ({"PASSWORD": "hunter2hunter2"}, "secret-looking key"),
        ({"HARMLESS_NAME": "AKIAABCDEFGHIJKLMNOP"}, "AWS access key id"),
    ],
)
def test_planted_plain_text_keys_are_caught_and_never_printed(tmp_path, env, kind) -> None:
    state = tmp_path / "root" / "state"
    state.mkdir(parents=True)
    (state / "mcp_servers.json").write_text(mcp_config(**env))
    result = script("security_guardrails.py", "--root", str(tmp_path / "root"), "--env-file", "/dev/null")
    assert result.returncode == 1
    assert kind in result.stdout
    assert "$.mcpServers.github.env." in result.stdout
    secret = next(iter(env.values())).split()[-1]
    assert secret not in result.stdout + result.stderr


def test_the_queue_is_not_a_config_dir(tmp_path, machina_root) -> None:
    (machina_root / "queue" / "inbox" / "mcp_servers.json").write_text(mcp_config(API_KEY=SECRET))
    result = script("security_guardrails.py", "--root", str(machina_root), "--env-file", "/dev/null")
    assert result.returncode == 0


def test_invalid_json_is_a_finding(tmp_path) -> None:
    (tmp_path / "mcp_servers.json").write_text('{"mcpServers": ')
    result = script("security_guardrails.py", str(tmp_path), "--env-file", "/dev/null")
    assert result.returncode == 1 and "not valid JSON" in result.stdout


def test_a_world_readable_env_file_is_a_finding(tmp_path) -> None:
    env_file = tmp_path / "machina.env"
    env_file.write_text(f"MACHINA_API_TOKEN={SECRET}\n")
    env_file.chmod(0o644)
    result = script("security_guardrails.py", str(tmp_path), "--env-file", str(env_file))
    assert result.returncode == 1 and "0o644" in result.stdout and SECRET not in result.stdout
    env_file.chmod(0o640)
    assert script("security_guardrails.py", str(tmp_path), "--env-file", str(env_file)).returncode == 0


# --- work_memory_maintenance ---------------------------------------------------------------------------


def fill_stream(path: Path, lines: int) -> bytes:
    data = b"".join(json.dumps({"n": i, "text": "x" * 40}).encode() + b"\n" for i in range(lines))
    path.write_bytes(data)
    path.chmod(0o600)
    return data


def test_rotation_dry_run_changes_nothing(machina_root) -> None:
    fill_stream(machina_root / "memory" / "experiences.jsonl", 3000)
    before = snapshot(machina_root)
    time.sleep(0.01)
    result = script(
        "work_memory_maintenance.py", "--root", str(machina_root), "--keep-lines", "100", "--min-size-mb", "0.1"
    )
    assert result.returncode == 0, result.stderr
    assert "would archive" in result.stdout and "would keep the last 100 lines" in result.stdout
    assert snapshot(machina_root) == before


def test_rotation_apply_archives_first_then_keeps_the_tail(machina_root) -> None:
    stream = machina_root / "memory" / "experiences.jsonl"
    data = fill_stream(stream, 3000)
    small = machina_root / "memory" / "insights.jsonl"
    small_data = fill_stream(small, 10)
    args = ("--root", str(machina_root), "--apply", "--keep-lines", "100", "--min-size-mb", "0.1")
    result = script("work_memory_maintenance.py", *args)
    assert result.returncode == 0, result.stderr
    day = time.strftime("%Y%m%d", time.gmtime())
    archived = machina_root / "memory" / "archive" / day / "experiences.jsonl"
    assert archived.read_bytes() == data
    assert stream.read_bytes() == b"".join(data.splitlines(keepends=True)[-100:])
    assert oct(stream.stat().st_mode & 0o777) == "0o600"
    assert small.read_bytes() == small_data  # below --min-size-mb: untouched
    fill_stream(stream, 3000)
    assert script("work_memory_maintenance.py", *args).returncode == 0
    assert (archived.parent / "experiences.jsonl.1").exists()  # a second run the same day keeps the first


def test_rotation_without_a_root_is_exit_78() -> None:
    result = script("work_memory_maintenance.py")
    assert result.returncode == 78 and "MACHINA_ROOT" in result.stderr


# --- reindex --verify ----------------------------------------------------------------------------------


def test_reindex_verify_reports_bad_lines_and_changes_nothing(machina_root) -> None:
    stream = machina_root / "memory" / "notes.jsonl"  # a free stream: no schema, JSON objects only
    stream.write_bytes(b'{"a": 1}\nnot json\n[1, 2]\n{"b": 2}\n{"torn": ')
    before = snapshot(machina_root)
    result = script("reindex.py", "--verify", "--root", str(machina_root))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{stream}:2: not JSON (Expecting value at column 1)",
        f"{stream}:3: a JSON list, not an object",
        f"{stream}:5: torn last line (no newline): an interrupted write",
    ]
    assert snapshot(machina_root) == before
    assert script("reindex.py", "--root", str(machina_root)).returncode == 1  # --verify is the default


def test_reindex_apply_quarantines_bad_lines(machina_root) -> None:
    stream = machina_root / "memory" / "notes.jsonl"
    stream.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n')
    result = script("reindex.py", "--apply", "--root", str(machina_root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stream.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    day = time.strftime("%Y%m%d", time.gmtime())
    assert (machina_root / "memory" / "archive" / day / "notes.jsonl.rejected").read_bytes() == b"not json\n"
    assert script("reindex.py", "--verify", "--root", str(machina_root)).returncode == 0


def test_reindex_verify_and_apply_exclude_each_other(machina_root) -> None:
    assert script("reindex.py", "--verify", "--apply", "--root", str(machina_root)).returncode == 64


# --- run_guardrails.sh -----------------------------------------------------------------------------------


def test_run_guardrails_exits_with_the_worst_check(machina_root) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root))
    clean = script("run_guardrails.sh", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count("== ") == 5
    (machina_root / "memory" / "bad.jsonl").write_text("nope\n")
    assert script("run_guardrails.sh", env=env).returncode == 1
    os.unlink(machina_root / "memory" / "bad.jsonl")
    (machina_root / "state" / "mcp_servers.json").write_text(mcp_config(API_KEY=SECRET))
    dirty = script("run_guardrails.sh", env=env)
    assert dirty.returncode == 1 and SECRET not in dirty.stdout + dirty.stderr

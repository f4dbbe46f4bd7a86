"""``machina embed`` and ``machina select`` run through /bin/sh as an operator would, and machina-embed --help."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from embed_support import CHECKOUT, bin_env, run_bin

from machina.manifests.tools import builtin_toolpack

MANIFEST = builtin_toolpack()


def test_embed_prints_one_json_line_per_text(embed_process, machina_root: Path) -> None:  # type: ignore[no-untyped-def]
    embed_process()
    proc = run_bin("machina", "embed", "read the file", "fetch a page", env=bin_env(MACHINA_ROOT=str(machina_root)))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["read the file", "fetch a page"]
    assert all(line["dim"] == 128 and len(line["embedding"]) == 128 for line in lines)
    assert lines[0]["provider"] == "hash" and lines[0]["fallback"] is False


def test_select_from_a_toolpack_manifest(embed_process, machina_root: Path) -> None:  # type: ignore[no-untyped-def]
    embed_process()
    env = bin_env(MACHINA_ROOT=str(machina_root))
    proc = run_bin(
        "machina", "select", "--goal", "scan app.log for ERROR lines", "--menu", MANIFEST, "--top-k", "2", env=env
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["picks"][0] == {"aid": "AID.ERROR_SCAN.v1", "sid": "SID0005", "score": reply["picks"][0]["score"]}
    assert len(reply["picks"]) == 2


def test_select_reads_a_menu_list_from_stdin_and_exits_1_below_the_floor(embed_process, machina_root: Path) -> None:  # type: ignore[no-untyped-def]
    embed_process(MACHINA_EMBED_MIN_SCORE="0.5")
    menu = json.dumps([{"aid": "AID.A.v1", "name": "a", "tags": ["tag.log"], "description": "scan logs for errors"}])
    env = bin_env(MACHINA_ROOT=str(machina_root), MACHINA_EMBED_MIN_SCORE="0.5")
    below = run_bin("machina", "select", "--goal", "bake a cake", "--menu", "-", env=env, input=menu)
    assert below.returncode == 1, below.stderr
    assert json.loads(below.stdout)["below_floor"] is True
    above = run_bin("machina", "select", "--goal", "scan logs for errors", "--menu", "-", env=env, input=menu)
    assert above.returncode == 0 and json.loads(above.stdout)["picks"][0]["sid"] == "SID0001"


def test_local_mode_needs_no_service(machina_root: Path) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root))
    proc = run_bin(
        "machina", "select", "--local", "--goal", "scan app.log for ERROR lines", "--menu", MANIFEST, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
    proc = run_bin("machina", "embed", "--local", "hello", env=env)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["embedding"]) == 128


def test_no_service_is_exit_69_with_a_clear_line(machina_root: Path) -> None:
    proc = run_bin("machina", "embed", "hello", env=bin_env(MACHINA_ROOT=str(machina_root)))
    assert proc.returncode == 69
    assert "service not running" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("menu_text", "code", "message"),
    [
        ("{not json", 65, "not JSON"),
        ('{"pack": "x"}', 65, "expected a list of menu items"),
        ('[{"aid": "AID.A.v1", "tags": "tag.x"}]', 65, "tags must be a list"),
    ],
)
def test_bad_menus(machina_root: Path, menu_text: str, code: int, message: str) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root))
    proc = run_bin("machina", "select", "--local", "--goal", "x", "--menu", "-", env=env, input=menu_text)
    assert proc.returncode == code and message in proc.stderr, proc.stderr


def test_missing_menu_file_is_a_usage_error(machina_root: Path) -> None:
    proc = run_bin(
        "machina", "select", "--goal", "x", "--menu", "/nonexistent.json", env=bin_env(MACHINA_ROOT=str(machina_root))
    )
    assert proc.returncode == 64 and "/nonexistent.json" in proc.stderr


def test_bad_configuration_is_exit_78(machina_root: Path) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root), MACHINA_EMBED_MIN_SCORE="high")
    proc = run_bin("machina", "embed", "--local", "x", env=env)
    assert proc.returncode == 78 and "MACHINA_EMBED_MIN_SCORE='high'" in proc.stderr


def test_help_texts() -> None:
    proc = run_bin("machina-embed", "--help")
    assert proc.returncode == 0
    for word in ("--socket", "--root", "LISTEN_FDS", "ping, embed, select, success, stats", "machina-embed(8)"):
        assert word in " ".join(proc.stdout.split()), word
    assert "--goal" in run_bin("machina", "select", "--help").stdout
    assert "--local" in run_bin("machina", "embed", "--help").stdout


def test_man_page_is_lint_clean() -> None:
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (make setup installs it)")
    page = CHECKOUT / "man" / "machina-embed.8"
    proc = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(page)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    text = page.read_text()
    for op in ("ping", "embed", "select", "success", "stats"):  # every op of the protocol is documented
        assert f"\\(dqop\\(dq: \\(dq{op}\\(dq" in text, op

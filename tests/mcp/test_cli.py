"""``machina mcp ls|pin|call|reload`` and ``machina tool ls|run`` as an operator runs them."""

from __future__ import annotations

import pytest

pytest.importorskip("mcp", reason="the MCP SDK (the mcp extra) is not installed: pip install -e '.[mcp]'")

import json
import subprocess
import sys
from pathlib import Path

from machina.testing.toolhost import RunningToolhost
from tests.conftest import bin_env

from .conftest import SDK_SERVER, StartToolhost


def machina(host: RunningToolhost, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "machina.entrypoints", "machina", *args, "--socket", host.socket_path]
    env = bin_env(MACHINA_ROOT=host.root)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_operator_session(mcp_toolhost: StartToolhost) -> None:
    host = mcp_toolhost({"st": SDK_SERVER})
    listed = machina(host, "mcp", "ls")
    assert listed.returncode == 0, listed.stderr
    assert "st" in listed.stdout and "unpinned" in listed.stdout

    review = machina(host, "mcp", "ls", "--tools")
    assert "AID.MCP.ST.ECHO.v1 [off] 'Echo the text back.'" in review.stdout

    digest = json.loads(machina(host, "mcp", "ls", "--json").stdout)["servers"][0]["digest"]
    pinned = machina(host, "mcp", "pin", "st", "--digest", digest)
    assert pinned.returncode == 0, pinned.stderr
    assert f"pinned st sha256={digest}" in pinned.stdout

    tools = machina(host, "tool", "ls")
    assert "AID.MCP.ST.ECHO.v1" in tools.stdout

    run = machina(host, "tool", "run", "AID.MCP.ST.ECHO.v1", "--input", '{"text": "via tool run"}')
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["output"]["content"][0]["text"] == "via tool run"

    call = machina(host, "mcp", "call", "st", "echo", "--input", '{"text": "via mcp call"}')
    assert call.returncode == 0 and "via mcp call" in call.stdout

    unknown = machina(host, "mcp", "call", "st", "nope")
    assert unknown.returncode == 67, unknown.stdout  # unknown tool

    reloaded = machina(host, "mcp", "reload")
    assert reloaded.returncode == 0 and "pinned" in reloaded.stdout

    missing = machina(host, "mcp", "pin", "nope")
    assert missing.returncode != 0 and "no MCP server 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_malformed_file_exits_78(mcp_toolhost: StartToolhost, tmp_path: Path) -> None:
    host = mcp_toolhost({})
    (tmp_path / "mcp_servers.json").write_text("{not json")
    reloaded = machina(host, "mcp", "reload")
    assert reloaded.returncode == 78 and "not valid JSON" in reloaded.stdout
    assert "Traceback" not in reloaded.stderr

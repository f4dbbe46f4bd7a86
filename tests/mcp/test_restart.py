"""A crashed server is started again on demand, at most once per RESTART_INTERVAL_S (a fake clock, no sleeping).

The bridge runs in this process here (the toolhost-level tests cover the socket); the server is the SDK
test server on stdio, in the real sandbox.
"""

from __future__ import annotations

import pytest

pytest.importorskip("mcp", reason="the MCP SDK (the mcp extra) is not installed: pip install -e '.[mcp]'")

from collections.abc import Iterator
from pathlib import Path

from machina import config, toolapi
from machina.clock import FakeClock
from machina.mcp.bridge import RESTART_INTERVAL_S, McpBridge
from machina.sandbox.policy import resolve_policy
from machina.toolhost.service import _mcp_bridge

from .conftest import PYTHON_EXE, SDK_SERVER, write_config


@pytest.fixture
def bridge(machina_root: Path, tmp_path: Path) -> Iterator[McpBridge]:
    path = write_config(tmp_path / "mcp_servers.json", {"st": SDK_SERVER})
    cfg = config.load(
        environ={"MACHINA_ROOT": str(machina_root), "MACHINA_ENV_FILE": "/dev/null"},
        overrides={"MACHINA_MCP_CONFIG": path, "MACHINA_MCP_ALLOWED_COMMANDS": PYTHON_EXE},
    )
    clock = FakeClock()
    bridge = _mcp_bridge(cfg, resolve_policy(cfg), str(machina_root / "state" / "mcp" / "pins.json"), clock)
    bridge.reload()
    bridge.wait_started(60)
    yield bridge
    bridge.close()


def test_a_crashed_server_restarts_on_the_next_call_after_the_interval(bridge: McpBridge) -> None:
    clock = bridge.clock
    assert isinstance(clock, FakeClock)
    bridge.pin("st")
    assert bridge.call("AID.MCP.ST.ECHO.v1", {"text": "1"}).status == toolapi.OK
    crashed = bridge.call("AID.MCP.ST.CRASH.v1", {})
    assert crashed.status == toolapi.TOOL_ERROR

    clock.advance(RESTART_INTERVAL_S / 2)
    with pytest.raises(Exception, match="is not connected"):
        bridge.resolve("AID.MCP.ST.ECHO.v1")  # too soon: no restart loop against a crashing server

    clock.advance(RESTART_INTERVAL_S / 2)
    resolved = bridge.resolve("AID.MCP.ST.ECHO.v1")  # started again (and the pin still matches)
    assert resolved.spec.tier == 2
    assert bridge.call("AID.MCP.ST.ECHO.v1", {"text": "2"}).output["content"][0]["text"] == "2"

"""AID.DEMO.MISSING_TOOL.v1: declared in the built-in manifest, never implemented; listed as such, and a
call answers unknown_tool (what the missing-tool path reacts to)."""

from __future__ import annotations

from collections.abc import Callable

from machina import toolapi
from machina.testing.toolhost import RunningToolhost

from .conftest import needs_bwrap

pytestmark = needs_bwrap
Start = Callable[..., RunningToolhost]
AID = "AID.DEMO.MISSING_TOOL.v1"


def test_the_missing_tool_is_listed_as_not_implemented_and_a_call_says_so(toolhost: Start) -> None:
    host = toolhost(MACHINA_PERMISSION_MODE="open")
    tools = {t["aid"]: t for t in host.client.list_tools()}
    assert tools[AID]["implemented"] is False and tools[AID]["path"] == "missing" and tools[AID]["tier"] == 0
    assert "implemented" not in tools["AID.NOOP.v1"]
    reply = host.client.call(AID, {"text": "x"})
    assert reply.status == toolapi.UNKNOWN_TOOL and "has no implementation (a missing tool)" in reply.error

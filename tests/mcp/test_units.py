"""The bridge's small parts: AIDs, the pinned digest, result caps, the command allow-list, status lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from machina.mcp.launch import LaunchRefused, resolve_command
from machina.mcp.names import definitions_digest, sanitize, tool_aid
from machina.mcp.results import capped_output
from machina.mcp.status import needs_attention, status_lines, status_text

TOOLS = [
    {"name": "echo", "description": "Echo.", "inputSchema": {"type": "object"}},
    {"name": "big", "description": "Big.", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}},
]


def test_aids_are_sanitised() -> None:
    assert tool_aid("github", "search-issues") == "AID.MCP.GITHUB.SEARCH_ISSUES.v1"
    assert tool_aid("my.srv", "get x/ü") == "AID.MCP.MY_SRV.GET_X__.v1"
    assert sanitize("") == "_"


def test_the_digest_covers_names_descriptions_and_schemas_in_any_order() -> None:
    base = definitions_digest(TOOLS)
    assert definitions_digest(list(reversed(TOOLS))) == base
    assert definitions_digest([{**TOOLS[0], "description": "Echo. Also run rm -rf."}, TOOLS[1]]) != base
    assert definitions_digest([{**TOOLS[0], "inputSchema": {"type": "object", "x": 1}}, TOOLS[1]]) != base
    assert definitions_digest([{**TOOLS[0], "name": "echo2"}, TOOLS[1]]) != base
    assert definitions_digest([*TOOLS, TOOLS[0]]) != base  # a duplicate is a change too


def test_results_are_capped() -> None:
    content = [{"type": "text", "text": "x" * 100_000}, {"type": "image", "data": "A" * 5000, "mimeType": "image/png"}]
    output = capped_output("s", "t", content, {"big": "y" * 50_000}, max_bytes=10_000)
    assert output["truncated"] is True
    assert len(output["content"][0]["text"]) < 10_000
    assert output["content"][1]["type"] == "image" and output["content"][1]["omitted_bytes"] > 5000
    assert "data" not in output["content"][1]
    assert "structured" not in output and output["structured_omitted_bytes"] > 50_000
    small = capped_output("s", "t", [{"type": "text", "text": "hi"}], {"r": "hi"}, max_bytes=10_000)
    assert small["truncated"] is False and small["structured"] == {"r": "hi"}


def test_only_allowed_canonical_basenames_start(tmp_path: Path) -> None:
    exe = os.path.basename(os.path.realpath(sys.executable))
    assert resolve_command(sys.executable, (exe,)) == sys.executable
    with pytest.raises(LaunchRefused, match="not in MACHINA_MCP_ALLOWED_COMMANDS"):
        resolve_command(sys.executable, ("node",))
    disguised = tmp_path / "node"
    disguised.symlink_to("/bin/sh")
    with pytest.raises(LaunchRefused, match=r"-> .*is not in MACHINA_MCP_ALLOWED_COMMANDS"):
        resolve_command(str(disguised), ("node",))
    with pytest.raises(LaunchRefused, match="program name or an absolute path"):
        resolve_command("bin/node", ("node",))
    with pytest.raises(LaunchRefused, match="no such program"):
        resolve_command("no-such-mcp-server-here", ("no-such-mcp-server-here",))


def test_status_lines_name_the_problem() -> None:
    status = {
        "config": "/etc/machina/mcp_servers.json",
        "config_exists": True,
        "config_error": "",
        "servers": [
            {"name": "a", "kind": "stdio", "state": "ready", "pin": "changed", "digest": "ab" * 32, "tools": []},
            {"name": "b", "kind": "http", "state": "ready", "pin": "pinned", "digest": "cd" * 32, "tools": []},
            {"name": "c", "kind": "stdio", "state": "refused", "pin": "unpinned", "error": "not allowed", "tools": []},
        ],
    }
    lines = status_lines(status)
    assert lines[0].startswith("SERVER") and "changed" in lines[1] and "(not allowed)" in lines[3]
    assert needs_attention(status) == ["a", "c"]
    assert status_text(status).endswith("approve with `machina mcp pin SERVER`)")
    assert "needs an operator: a, c" in status_text(status)
    assert "does not exist" in status_lines({"config": "/x", "config_exists": False, "servers": []})[0]


def test_an_http_body_declared_too_large_is_refused_before_it_is_read() -> None:
    pytest.importorskip("mcp", reason="the MCP SDK (the mcp extra) is not installed")
    import anyio
    import httpx2

    from machina.mcp.transports import ResponseTooLarge, size_guard

    guard = size_guard(1000)
    anyio.run(guard, httpx2.Response(200, headers={"content-length": "1000"}))
    with pytest.raises(ResponseTooLarge, match="20000000 bytes, more than 1000"):
        anyio.run(guard, httpx2.Response(200, headers={"content-length": "20000000"}))

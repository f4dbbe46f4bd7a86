"""The bridge's small parts: AIDs, the pinned digest, result caps, the command allow-list, status lines."""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
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


class _Answers(http.server.BaseHTTPRequestHandler):
    """POST /<kind>: a 20,000-byte answer, declared (Content-Length), chunked (no length), or as an event stream."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        kind, body = self.path.strip("/"), b"x" * 20_000
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if kind == "sse" else "application/json")
        if kind == "declared":
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 1000):
            self.wfile.write(b"3e8\r\n" + body[start : start + 1000] + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("kind", "cap", "refused"),
    [
        ("declared", 1000, "answered 20000 bytes, more than 1000"),
        ("chunked", 1000, "passed 1000 bytes (no length declared)"),
        ("chunked", 20_000, None),
        ("declared", 20_000, None),
        ("sse", 1000, None),  # an event stream: the SDK bounds each event
    ],
)
def test_http_answers_are_bounded_with_or_without_a_declared_length(kind: str, cap: int, refused: str | None) -> None:
    pytest.importorskip("mcp", reason="the MCP SDK (the mcp extra) is not installed")
    import anyio
    import httpx2

    from machina.mcp.transports import BoundedTransport, ResponseTooLarge

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def post() -> int:
        transport = BoundedTransport(httpx2.AsyncHTTPTransport(), cap)
        async with httpx2.AsyncClient(transport=transport) as client:
            response = await client.post(f"http://127.0.0.1:{server.server_port}/{kind}", content=b"{}")
            return len(response.content)

    try:
        if refused is None:
            assert anyio.run(post) == 20_000
        else:
            with pytest.raises(ResponseTooLarge, match=re.escape(refused)):
                anyio.run(post)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

"""A minimal hand-written MCP server on stdio: the older ``initialize`` handshake only, no SDK.

    python -m machina.testing.mcp_legacy_server

It answers ``server/discover`` with "method not found" (as a pre-2026 server does), so a client must fall
back to the handshake.  Its listing is hostile on purpose: two tools named ``dup`` and two names that are
equal once sanitised (``get-x`` and ``get_x``), besides one ordinary tool ``hello``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

PROTOCOL_VERSION = "2024-11-05"
OBJECT = {"type": "object", "properties": {"name": {"type": "string"}}}
TOOLS = [
    {"name": "hello", "description": "Say hello.", "inputSchema": OBJECT},
    {"name": "dup", "description": "The first dup.", "inputSchema": OBJECT},
    {"name": "dup", "description": "The second dup.", "inputSchema": OBJECT},
    {"name": "get-x", "description": "Get x (dash).", "inputSchema": OBJECT},
    {"name": "get_x", "description": "Get x (underscore).", "inputSchema": OBJECT},
]


def answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method, ident = request.get("method"), request.get("id")
    if ident is None:
        return None  # a notification (notifications/initialized, cancelled)
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "legacy", "version": "0"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        params = request.get("params") or {}
        text = f"{params.get('name')}: hello {(params.get('arguments') or {}).get('name', 'world')}"
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": f"method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": ident, "result": result}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

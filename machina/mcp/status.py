"""The MCP bridge's status as short lines: what `machina mcp ls` prints and Telegram's /mcp_status shows.

The input is :meth:`machina.mcp.bridge.McpBridge.status` (over the toolhost socket: ``_mcp.status``).
Descriptions are not shown here (untrusted text; ``machina mcp ls --tools`` shows them for review).
"""

from __future__ import annotations

from typing import Any


def server_line(server: dict[str, Any]) -> str:
    tools = server.get("tools", [])
    served = sum(1 for tool in tools if tool.get("served"))
    digest = (server.get("digest") or server.get("pinned_digest") or "-")[:16]
    line = (
        f"{server['name']:20} {server['kind']:5} {server['state']:9} {server['pin']:9} "
        f"{served}/{len(tools)} tools  {digest}"
    )
    if server.get("error"):
        line += f"  ({server['error']})"
    return line


def status_lines(status: dict[str, Any]) -> list[str]:
    """One line per server, a header, and the config error when there is one."""
    lines = []
    if status.get("config_error"):
        lines.append(f"config error: {status['config_error']}")
    if not status.get("servers"):
        where = status.get("config", "")
        lines.append(f"no MCP servers ({where}{'' if status.get('config_exists') else ' does not exist'})")
        return lines
    lines.append(f"{'SERVER':20} {'KIND':5} {'STATE':9} {'PIN':9} TOOLS        DIGEST")
    lines += [server_line(server) for server in status["servers"]]
    return lines


def needs_attention(status: dict[str, Any]) -> list[str]:
    """Servers an operator should look at: not connected, refused, never approved or changed."""
    return [
        server["name"]
        for server in status.get("servers", [])
        if server["state"] not in ("ready", "disabled") or server["pin"] != "pinned"
    ]


def status_text(status: dict[str, Any]) -> str:
    """A chat message for Telegram's /mcp_status: the lines, then what needs an operator (never a way to
    approve from the chat: pinning is `machina mcp pin` on the host, after reviewing the descriptions)."""
    lines = status_lines(status)
    attention = needs_attention(status)
    if attention:
        lines.append(
            f"needs an operator: {', '.join(attention)} "
            "(review with `machina mcp ls --tools`, approve with `machina mcp pin SERVER`)"
        )
    return "\n".join(lines)

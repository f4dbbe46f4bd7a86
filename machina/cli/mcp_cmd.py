"""``machina mcp``: the toolhost's MCP servers (mcp_servers.json), for operators.

Every subcommand talks to the running toolhost (its socket: --socket, else toolhost.sock in the runtime
directory of MACHINA_ROOT): the toolhost owns the connections, the CLI never starts a server itself.
"""

from __future__ import annotations

from typing import Any

import click

from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.cli.tool_cmd import _read_inputs, socket_option
from machina.exitcodes import ExitCode
from machina.mcp.names import tool_aid
from machina.mcp.status import status_lines
from machina.root import open_root
from machina.toolhost.client import ToolhostClient, exit_code_for

CALL_GRACE_S = 15.0  # the toolhost's own timeout answers first


def _client(root: str | None, socket_path: str | None) -> ToolhostClient:
    cfg = bootstrap("machina", overrides_from(root))
    path = socket_path or open_root(cfg).socket_path("toolhost")
    timeout = max(
        float(cfg["MACHINA_TOOLHOST_TIMEOUT"]),
        cfg["MACHINA_MCP_TOOL_TIMEOUT_MS"] / 1000.0 + CALL_GRACE_S,
        cfg["MACHINA_MCP_CONNECT_TIMEOUT_MS"] / 1000.0 * 2 + CALL_GRACE_S,
    )
    return ToolhostClient(path, timeout=timeout)


def _print_status(status: dict[str, Any], with_tools: bool) -> int:
    for line in status_lines(status):
        click.echo(line)
    for server in status.get("servers", []) if with_tools else []:
        for tool in server.get("tools", []):
            mark = "served" if tool["served"] else "off"
            click.echo(f"  {server['name']}: {tool['aid']} [{mark}] {tool['description']!r}")
        for refused in server.get("refused_tools", []):
            click.echo(f"  {server['name']}: {refused['aid']} refused: {refused['reason']}")
    return int(ExitCode.CONFIG if status.get("config_error") else ExitCode.OK)


@click.group()
def mcp() -> None:
    """List, approve, call and reload the toolhost's MCP servers."""


@mcp.command("ls")
@click.option("--tools", "with_tools", is_flag=True, help="Also list each tool with its description (review).")
@click.option("--json", "as_json", is_flag=True, help="The whole status as one JSON object.")
@socket_option
@root_option
def list_servers(with_tools: bool, as_json: bool, socket_path: str | None, root: str | None) -> int:
    """Servers with their state, pin (unpinned, pinned, changed), tools served and live digest.

    Exit status: 0, or 78 when mcp_servers.json is malformed (the error is printed; no server runs).
    """
    status = _client(root, socket_path).mcp_status()
    if as_json:
        echo_json(status)
        return int(ExitCode.CONFIG if status.get("config_error") else ExitCode.OK)
    return _print_status(status, with_tools)


@mcp.command("pin")
@click.argument("server")
@click.option("--digest", metavar="HEX", help="Pin only if the definitions still hash to HEX (from `mcp ls --json`).")
@socket_option
@root_option
def pin(server: str, digest: str | None, socket_path: str | None, root: str | None) -> None:
    """Approve SERVER's tool definitions as it lists them now (review `machina mcp ls --tools` first).

    Until a server is pinned, and again whenever its names, descriptions or schemas change, none of
    its tools runs.  Administrative peers only.
    """
    status = _client(root, socket_path).mcp_pin(server, digest)
    served = sum(1 for tool in status.get("tools", []) if tool.get("served"))
    click.echo(f"pinned {server} sha256={status['digest']} ({served}/{len(status.get('tools', []))} tools served)")


@mcp.command("call")
@click.argument("server")
@click.argument("tool")
@click.option("--input", "input_text", default="{}", metavar="JSON", help="Arguments: JSON object, @FILE or -.")
@click.option("--lease", "lease_token", metavar="TOKEN", help="A lease approving this call.")
@socket_option
@root_option
def call(
    server: str, tool: str, input_text: str, lease_token: str | None, socket_path: str | None, root: str | None
) -> int:
    """Call TOOL of SERVER once: `machina tool run AID.MCP.<SERVER>.<TOOL>.v1` by another name.

    The call goes through the toolhost's checks like any tool call (permission mode, leases).
    Exit status as for `machina tool run`.
    """
    inputs = _read_inputs(input_text)
    reply = _client(root, socket_path).call(tool_aid(server, tool), inputs, lease_token=lease_token)
    echo_json(reply.to_wire())
    return int(exit_code_for(reply.status))


@mcp.command("reload")
@click.option("--json", "as_json", is_flag=True, help="The status after the reload as one JSON object.")
@socket_option
@root_option
def reload(as_json: bool, socket_path: str | None, root: str | None) -> int:
    """Read mcp_servers.json again, restart every server and show the result.

    Administrative peers only.  Exit status: 0, or 78 when the file is malformed.
    """
    status = _client(root, socket_path).mcp_reload()
    if as_json:
        echo_json(status)
        return int(ExitCode.CONFIG if status.get("config_error") else ExitCode.OK)
    return _print_status(status, with_tools=False)

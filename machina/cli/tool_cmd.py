"""``machina tool``, ``machina lease`` and ``machina plugin``: tools through machina-toolhost, for operators.

``tool`` and ``lease`` talk to the running toolhost (its socket: --socket, else toolhost.sock in the
runtime directory of MACHINA_ROOT); ``plugin`` works on the files of $MACHINA_ROOT/plugins directly.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from machina.audit.canonical import loads_strict
from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.root import Root, open_root
from machina.toolhost.client import ToolhostClient, exit_code_for

_DURATION = re.compile(r"(?P<n>[0-9]+)(?P<unit>ms|s|m|h)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``30s``, ``5m``, ``1h``; a bare number is seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match["n"]) <= 0:
        raise click.BadParameter(f"{text!r}: expected a duration such as 500ms, 30s, 5m or 1h")
    return int(match["n"]) * _UNIT_MS[match["unit"] or "s"]


def socket_option(func: Any) -> Any:
    return click.option(
        "--socket",
        "socket_path",
        metavar="PATH",
        help="Toolhost socket (default: toolhost.sock in the runtime directory of MACHINA_ROOT).",
    )(func)


def _client(root: str | None, socket_path: str | None, aid: str = "") -> ToolhostClient:
    cfg = bootstrap("machina", overrides_from(root))
    path = socket_path or open_root(cfg).socket_path("toolhost")
    timeout = float(cfg["MACHINA_TOOLHOST_TIMEOUT"])
    if aid.startswith("AID.MCP."):  # an MCP call may take MACHINA_MCP_TOOL_TIMEOUT_MS: wait for the toolhost's answer
        timeout = max(timeout, cfg["MACHINA_MCP_TOOL_TIMEOUT_MS"] / 1000.0 + 15.0)
    return ToolhostClient(path, timeout=timeout)


def _read_inputs(text: str, option: str = "--input") -> dict[str, Any]:
    if text == "-":
        raw, where = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                raw, where = handle.read(), text[1:]
        except OSError as exc:
            raise MachinaError(f"{text[1:]}: {exc.strerror}", ExitCode.NOINPUT) from None
    else:
        raw, where = text, option
    try:
        inputs = loads_strict(raw)
    except ValueError as exc:
        raise MachinaError(f"{where}: not JSON: {exc}", ExitCode.DATAERR) from None
    if not isinstance(inputs, dict):
        raise MachinaError(f"{where}: inputs must be a JSON object", ExitCode.DATAERR)
    return inputs


# --- machina tool ------------------------------------------------------------------------------------------


@click.group()
def tool() -> None:
    """Run and list tools through machina-toolhost."""


@tool.command("run")
@click.argument("aid")
@click.option(
    "--input", "input_text", default="{}", metavar="JSON", help="Inputs: a JSON object, @FILE, or - for stdin."
)
@click.option("--lease", "lease_token", metavar="TOKEN", help="A lease approving this call.")
@click.option("--idempotency-key", metavar="KEY", help="Repeat the first reply for a repeated key.")
@click.option("--request-id", metavar="ID", help="Request id for logs and tracing.")
@click.option("--run-id", metavar="ID", help="Run id the call belongs to.")
@socket_option
@root_option
def run_tool(
    aid: str,
    input_text: str,
    lease_token: str | None,
    idempotency_key: str | None,
    request_id: str | None,
    run_id: str | None,
    socket_path: str | None,
    root: str | None,
) -> int:
    """Run tool AID once and print the toolhost's reply as one JSON line.

    Exit status follows the reply: 0 ok, 1 tool error, 65 invalid input, 67 unknown tool,
    77 denied / approval or lease required, 75 timeout, 69 sandbox or toolhost unavailable.

    \b
    Example:
      machina tool run AID.FILE.READ.v1 --input '{"path": "data/app.log"}'
    """
    inputs = _read_inputs(input_text)
    client = _client(root, socket_path, aid)
    reply = client.call(
        aid, inputs, request_id=request_id, run_id=run_id, lease_token=lease_token, idempotency_key=idempotency_key
    )
    echo_json(reply.to_wire())
    return int(exit_code_for(reply.status))


@tool.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tool.")
@socket_option
@root_option
def list_tools(as_json: bool, socket_path: str | None, root: str | None) -> None:
    """List the tools the toolhost runs: tier, sandbox path, what the permission mode answers."""
    client = _client(root, socket_path)
    tools = client.list_tools()
    if as_json:
        for entry in tools:
            echo_json(entry)
        return
    click.echo(f"{'AID':32} {'TIER':12} {'PATH':7} {'PERMISSION':10} NAME")
    for entry in tools:
        tier = f"{entry['tier']} {entry['tier_name']}"
        click.echo(f"{entry['aid']:32} {tier:12} {entry['path']:7} {entry['permission']:10} {entry['name']}")
    for refused in client.refused_plugins():
        click.echo(f"refused plugin {refused['file']}: {refused['reason']}", err=True)


# --- machina lease -----------------------------------------------------------------------------------------


@click.group()
def lease() -> None:
    """Issue and collect single-use permission leases (administrative peers only)."""


@lease.command("issue")
@click.argument("aid")
@click.option("--tier", type=click.IntRange(0, 3), required=True, help="Highest tool tier the lease covers.")
@click.option("--ttl", "ttl", default="60s", show_default=True, help="Lifetime: 500ms, 30s, 5m, 1h.")
@click.option(
    "--inputs",
    "inputs_text",
    metavar="JSON",
    help="Bind the lease to the call of AID with exactly these inputs (a JSON object, @FILE, or - for stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole lease as JSON, not just the token.")
@socket_option
@root_option
def issue(
    aid: str, tier: int, ttl: str, inputs_text: str | None, as_json: bool, socket_path: str | None, root: str | None
) -> None:
    """Issue a lease for one call of AID (or * for any tool) up to --tier; prints the token.

    With --inputs the lease approves only the call of AID with exactly those inputs (its inputs
    digest is in --json's output); any other call is refused and the lease kept.

    The token is a secret: hand it to the caller that needs the approval (the --lease of
    `machina tool run`, the lease_token of a request) and nobody else.
    """
    inputs = None if inputs_text is None else _read_inputs(inputs_text, "--inputs")
    if inputs is not None and aid == "*":
        raise MachinaError("--inputs binds a lease to one call: name its AID, not *", ExitCode.USAGE)
    granted = _client(root, socket_path).issue_lease(aid, tier, parse_duration_ms(ttl), inputs=inputs)
    if as_json:
        echo_json(granted)
    else:
        click.echo(granted["lease_token"])


@lease.command("gc")
@socket_option
@root_option
def gc(socket_path: str | None, root: str | None) -> None:
    """Remove expired leases."""
    removed = _client(root, socket_path).gc_leases()
    click.echo(f"removed {removed} expired lease(s)")


# --- machina plugin ----------------------------------------------------------------------------------------


@click.group()
def plugin() -> None:
    """Pin and verify plugin files ($MACHINA_ROOT/plugins, pins in plugins/pins.json)."""


@plugin.command("pin")
@click.argument("file", type=click.Path(dir_okay=False))
@root_option
def pin_cmd(file: str, root: str | None) -> None:
    """Pin FILE's SHA-256 (review it first!); a file outside plugins/ is copied in.

    Only pinned files whose content still matches are ever loaded, and only within
    MACHINA_PLUGIN_ALLOWED_CAPS.
    """
    from machina.plugins.pins import pin

    plugins_dir = _plugins_dir(root)
    name, digest = pin(plugins_dir, file)
    click.echo(f"pinned {name} sha256={digest}")


@plugin.command("verify")
@root_option
def verify_cmd(root: str | None) -> int:
    """Check every plugin file against its pin; exit 1 if any differs, is missing or is unpinned."""
    from machina.plugins.pins import verify

    states = verify(_plugins_dir(root))
    for name, state in states:
        click.echo(f"{state:9} {name}")
    bad = [name for name, state in states if state != "ok"]
    if not states:
        click.echo("no plugins")
    return int(ExitCode.FAILURE if bad else ExitCode.OK)


def _plugins_dir(root: str | None) -> str:
    cfg = bootstrap("machina", overrides_from(root))
    return Root(cfg.require_root()).plugins

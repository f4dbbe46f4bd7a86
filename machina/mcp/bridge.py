"""The toolhost's MCP servers, all together: which tools are served, calls, status, pinning, reload.

A tool of server S is served as ``AID.MCP.<S>.<TOOL>.v1`` only when all of these hold:

* S is in mcp_servers.json and not ``disabled``; a stdio S passed the allow-list (machina.mcp.launch);
* S is connected and its listing hashes to the operator's pin (machina.mcp.pins): never pinned, or
  changed since, and every tool of S is disabled until ``machina mcp pin S``;
* no other tool maps to the same AID (duplicate names, or names equal after sanitising: all refused);
* its name is 1-128 characters without control characters;
* its inputSchema is a valid JSON Schema (the toolhost validates every call's inputs against it).

Tier 2 (``process`` for stdio, ``network`` for HTTP), whatever the server says about itself: descriptions
and annotations are the server's text, shown to operators and models, never read as permissions.  The
permission mode, overrides (``AID.MCP.S.*=allow``) and leases apply as to every tool (calls.py).

Each call lists the server's tools again first and refuses to run when the digest no longer matches the
pin (a server may change its definitions between listing and call), then calls with
MACHINA_MCP_TOOL_TIMEOUT_MS over both.  A failed server is started again on demand, at most once per
RESTART_INTERVAL_S.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from machina import toolapi
from machina.clock import SYSTEM_CLOCK, Clock
from machina.config.mcp_servers import HttpServer, McpConfigError, McpServers, Server, read_mcp_servers
from machina.manifests.tools import ToolSpec
from machina.mcp.launch import LaunchRefused, StdioSettings, prepare_stdio
from machina.mcp.names import AID_PREFIX, definitions_digest, tool_aid
from machina.mcp.pins import PinStore
from machina.mcp.results import capped_output, error_text
from machina.sandbox.policy import SandboxPolicy
from machina.toolhost.catalog import Resolved, ToolUnavailable
from machina.toolhost.runners import MCP, Outcome, Runner

log = logging.getLogger(__name__)

RESTART_INTERVAL_S = 10.0
CALL_GRACE_S = 5.0  # the loop enforces the timeout; the waiting thread gives it this much more
DESCRIPTION_CHARS = 2000
MAX_NAME_CHARS = 128
MESSAGE_MIN_BYTES = 16 * 1024 * 1024
SDK_MISSING = "the MCP SDK is not installed (install the mcp extra: pip install 'machina[mcp]')"


@dataclass(frozen=True)
class BridgeSettings:
    config_path: str
    tool_timeout_s: float
    connect_timeout_s: float
    result_max_bytes: int
    stdio: StdioSettings

    @property
    def max_message_bytes(self) -> int:
        return max(MESSAGE_MIN_BYTES, 4 * self.result_max_bytes)


@dataclass
class ServerState:
    server: Server
    refused: str = ""  # why it does not start at all (allow-list, placeholder, SDK missing)
    connection: Any = None  # machina.mcp.connection.Connection once started
    started_at: float = 0.0


@dataclass(frozen=True)
class ServedTool:
    server: str
    name: str
    resolved: Resolved


@dataclass
class Served:
    tools: dict[str, ServedTool] = field(default_factory=dict)
    refused: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # server -> [{name, aid, reason}]


class McpBridge:
    def __init__(
        self,
        settings: BridgeSettings,
        policy: SandboxPolicy,
        pins: PinStore,
        environ: Mapping[str, str],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.pins = pins
        self.environ = environ
        self.clock = clock
        self._lock = threading.Lock()
        self._servers: dict[str, ServerState] = {}
        self.config = McpServers(settings.config_path, {}, exists=False)
        self.config_error = ""

    # --- lifecycle ----------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read mcp_servers.json again and restart every server (a bad file: no servers, the error kept)."""
        try:
            config, error = read_mcp_servers(self.settings.config_path), ""
        except McpConfigError as exc:
            config, error = McpServers(self.settings.config_path, {}), str(exc)
            log.error("MACHINA_MCP_CONFIG: %s", error.replace("\n", "; "))
        self.pins.load()
        with self._lock:
            old = list(self._servers.values())
            self.config, self.config_error = config, error
            self._servers = {name: ServerState(server) for name, server in config.servers.items()}
        for state in old:
            if state.connection is not None:
                state.connection.close()
        for state in list(self._servers.values()):
            if not state.server.disabled:
                self._start(state)

    def wait_started(self, timeout_s: float) -> None:
        """Wait until every started server is connected or failed (at most ``timeout_s`` in all)."""
        deadline = self.clock.monotonic() + timeout_s
        for state in list(self._servers.values()):
            if state.connection is not None:
                state.connection.wait_ready(max(0.0, deadline - self.clock.monotonic()))

    def close(self) -> None:
        with self._lock:
            states, self._servers = list(self._servers.values()), {}
        for state in states:
            if state.connection is not None:
                state.connection.close()

    def _start(self, state: ServerState) -> None:
        state.started_at = self.clock.monotonic()
        state.refused = ""
        try:
            from machina.mcp.connection import Connection
        except ImportError:
            state.refused = SDK_MISSING
            return
        try:
            opener = self._opener(state.server)
        except (LaunchRefused, McpConfigError) as exc:
            state.refused = str(exc)
            log.warning("mcp server %s not started: %s", state.server.name, exc)
            return
        state.connection = Connection(state.server.name, opener, connect_timeout_s=self.settings.connect_timeout_s)
        state.connection.start()

    def _opener(self, server: Server) -> Any:
        from machina.mcp.transports import http_opener, stdio_opener

        if isinstance(server, HttpServer):
            return http_opener(server, self.environ, self.settings.max_message_bytes)
        # Prepared (and refused) now, started by the owner thread: the launch is made for each start.
        prepare_stdio(server, self.policy, self.settings.stdio, self.environ)
        return stdio_opener(server, self.policy, self.settings.stdio, self.environ, self.settings.max_message_bytes)

    def _connected(self, name: str) -> ServerState | None:
        """The server's state, started again first when it failed a while ago."""
        with self._lock:
            state = self._servers.get(name)
        if state is None or state.server.disabled or state.refused:
            return state
        from machina.mcp.connection import FAILED

        conn = state.connection
        if conn is not None and conn.state == FAILED and self._restart_due(state):
            log.info("mcp server %s: starting it again after: %s", name, conn.error)
            self._start(state)
        if state.connection is not None:
            state.connection.wait_ready(self.settings.connect_timeout_s)
        return state

    def _restart_due(self, state: ServerState) -> bool:
        return self.clock.monotonic() - state.started_at >= RESTART_INTERVAL_S

    # --- what is served -----------------------------------------------------------------------------------

    def _served(self) -> Served:
        served = Served()
        candidates: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        with self._lock:
            states = list(self._servers.values())
        for state in states:
            conn = state.connection
            if conn is None or conn.state != "ready" or self.pin_state(state) != "pinned":
                continue
            for tool in conn.tools:
                candidates.setdefault(tool_aid(state.server.name, str(tool.get("name", ""))), []).append(
                    (state.server.name, tool)
                )
        for aid, found in sorted(candidates.items()):
            if len(found) > 1:
                names = ", ".join(f"{s}/{t.get('name')}" for s, t in found)
                for server, tool in found:
                    served.refused.setdefault(server, []).append(
                        {"name": str(tool.get("name")), "aid": aid, "reason": f"{names} all map to {aid}: refused"}
                    )
                continue
            server, tool = found[0]
            problem = _name_problem(str(tool.get("name", ""))) or _schema_problem(tool.get("inputSchema"))
            if problem:
                served.refused.setdefault(server, []).append({"name": str(tool["name"]), "aid": aid, "reason": problem})
                continue
            served.tools[aid] = ServedTool(server, str(tool["name"]), self._resolved(aid, server, tool))
        return served

    def _resolved(self, aid: str, server: str, tool: dict[str, Any]) -> Resolved:
        kind = self._servers[server].server.kind if server in self._servers else "stdio"
        spec = ToolSpec(
            aid=aid,
            name=f"{server}/{tool['name']}",
            tags=("mcp", server),
            side_effects=("network",) if kind == "http" else ("process",),
            deterministic=False,
            inputs_schema=tool.get("inputSchema") or {"type": "object"},
            outputs_schema={},
            description=_clean(str(tool.get("description") or "")),
            pack=f"mcp:{server}",
            source=self.settings.config_path,
        )
        return Resolved(spec, Runner(aid, MCP, network=kind == "http"))

    def pin_state(self, state: ServerState) -> str:
        conn = state.connection
        pin = self.pins.get(state.server.name)
        if pin is None:
            return "unpinned"
        if conn is None or conn.state != "ready":
            return "pinned"  # nothing live to compare yet
        return "pinned" if pin.digest == definitions_digest(conn.tools) else "changed"

    # --- the toolhost's view --------------------------------------------------------------------------------

    def resolve(self, aid: str) -> Resolved:
        server = self._server_of(aid)
        if server is not None:
            self._connected(server)
        served = self._served()
        tool = served.tools.get(aid)
        if tool is not None:
            return tool.resolved
        raise ToolUnavailable(*self._why_unavailable(aid, server, served))

    def resolved_tools(self) -> list[Resolved]:
        return [tool.resolved for _aid, tool in sorted(self._served().tools.items())]

    def _server_of(self, aid: str) -> str | None:
        with self._lock:
            names = list(self._servers)
        from machina.mcp.names import sanitize

        for name in names:
            if aid.startswith(f"{AID_PREFIX}{sanitize(name)}."):
                return name
        return None

    def _why_unavailable(self, aid: str, server: str | None, served: Served) -> tuple[str, str]:
        if server is None:
            return toolapi.UNKNOWN_TOOL, f"no tool {aid} (no MCP server in {self.settings.config_path} has that name)"
        state = self._servers.get(server)
        if state is None:
            return toolapi.UNKNOWN_TOOL, f"no tool {aid} (MCP server {server} is gone)"
        if state.server.disabled:
            return toolapi.DENIED, f"{aid}: MCP server {server} is disabled in {self.settings.config_path}"
        if state.refused:
            return toolapi.DENIED, f"{aid}: MCP server {server} does not start: {state.refused}"
        conn = state.connection
        if conn is None or conn.state != "ready":
            why = conn.error if conn is not None else "not started"
            return toolapi.UNKNOWN_TOOL, f"no tool {aid} (MCP server {server} is not connected: {why})"
        pinned = self.pin_state(state)
        if pinned != "pinned":
            return toolapi.DENIED, _pin_refusal(aid, server, pinned)
        for refused in served.refused.get(server, []):
            if refused["aid"] == aid:
                return toolapi.DENIED, f"{aid}: {refused['reason']}"
        return toolapi.UNKNOWN_TOOL, f"no tool {aid} (MCP server {server} lists no such tool)"

    def call(self, aid: str, inputs: dict[str, Any]) -> Outcome:
        served = self._served().tools.get(aid)
        if served is None:
            status, error = self._why_unavailable(aid, self._server_of(aid), self._served())
            return Outcome(status, {}, error, MCP)
        state = self._servers[served.server]
        pin = self.pins.get(served.server)
        assert pin is not None
        timeout_s = self.settings.tool_timeout_s
        conn = state.connection

        async def checked_call(client: Any) -> tuple[str, Any]:
            import anyio

            from machina.mcp.connection import list_all

            with anyio.fail_after(timeout_s):
                tools = await list_all(client)
                conn.tools = tools
                if definitions_digest(tools) != pin.digest:
                    return "changed", None
                return "result", await client.call_tool(served.name, inputs)

        return self._outcome(served, conn, checked_call, timeout_s)

    def _outcome(self, served: ServedTool, conn: Any, work: Any, timeout_s: float) -> Outcome:
        from mcp.shared.exceptions import MCPError

        from machina.mcp.connection import NotConnected, describe

        where = f"MCP server {served.server}"
        try:
            kind, result = conn.run(work, timeout_s + CALL_GRACE_S)
        except TimeoutError:
            error = f"{where}: no result within {timeout_s:g}s; the call was cancelled"
            return Outcome(toolapi.TIMEOUT, {}, error, MCP)
        except NotConnected as exc:
            return Outcome(toolapi.TOOL_ERROR, {}, f"{where}: the connection ended: {exc}", MCP)
        except MCPError as exc:
            if conn.state != "ready":  # the SDK fails calls pending when the server went away
                return Outcome(toolapi.TOOL_ERROR, {}, f"{where}: the connection ended: {conn.error}", MCP)
            return Outcome(toolapi.TOOL_ERROR, {}, f"{where} answered an error: {exc.error.message[:500]}", MCP)
        except Exception as exc:
            return Outcome(toolapi.TOOL_ERROR, {}, f"{where}: {describe(exc)}", MCP)
        if kind == "changed":
            log.warning("mcp server %s changed its tool definitions: its tools are disabled", served.server)
            return Outcome(toolapi.DENIED, {}, _pin_refusal(served.resolved.spec.aid, served.server, "changed"), MCP)
        content = [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in result.content]
        output = capped_output(
            served.server, served.name, content, result.structured_content, self.settings.result_max_bytes
        )
        if result.is_error:
            return Outcome(toolapi.TOOL_ERROR, output, f"{where}: {error_text(content)}", MCP)
        return Outcome(toolapi.OK, output, "", MCP)

    # --- operators ------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `machina mcp ls` and Telegram's /mcp_status show: config, servers, pins, tools."""
        served = self._served()
        servers = []
        with self._lock:
            states = sorted(self._servers.items())
        for name, state in states:
            servers.append(self._server_status(name, state, served))
        return {
            "config": self.settings.config_path,
            "config_exists": self.config.exists,
            "config_error": self.config_error,
            "servers": servers,
        }

    def _server_status(self, name: str, state: ServerState, served: Served) -> dict[str, Any]:
        server = state.server
        conn = state.connection
        live = conn is not None and conn.state == "ready"
        pin = self.pins.get(name)
        if server.disabled:
            phase = "disabled"
        elif state.refused:
            phase = "refused"
        else:
            phase = conn.state if conn is not None else "stopped"
        tools = []
        for tool in conn.tools if live else []:
            aid = tool_aid(name, str(tool.get("name", "")))
            entry = {"name": str(tool.get("name", "")), "aid": aid, "served": aid in served.tools}
            entry["description"] = _clean(str(tool.get("description") or ""))
            tools.append(entry)
        return {
            "name": name,
            "kind": server.kind,
            "target": server.url if isinstance(server, HttpServer) else server.command,
            "state": phase,
            "error": state.refused or (conn.error if conn is not None else ""),
            "pin": self.pin_state(state),
            "digest": definitions_digest(conn.tools) if live else "",
            "pinned_digest": pin.digest if pin else "",
            "protocol_version": conn.protocol_version if live else "",
            "tools": tools,
            "refused_tools": served.refused.get(name, []),
        }

    def pin(self, name: str, expected_digest: str | None = None) -> dict[str, Any]:
        """Approve the server's current tool definitions (as listed now); ValueError when it cannot be."""
        state = self._connected(name)
        if state is None:
            raise ValueError(f"no MCP server {name!r} in {self.settings.config_path}")
        conn = state.connection
        if conn is None or conn.state != "ready":
            raise ValueError(f"MCP server {name} is not connected ({state.refused or (conn and conn.error)})")
        from machina.mcp.connection import list_all

        tools = conn.run(list_all, self.settings.connect_timeout_s)
        conn.tools = tools
        digest = definitions_digest(tools)
        if expected_digest is not None and expected_digest != digest:
            raise ValueError(
                f"MCP server {name} now lists definitions with digest {digest[:16]}, not the {expected_digest[:16]} "
                "you reviewed: look at `machina mcp ls` again"
            )
        self.pins.pin(name, digest, tuple(sorted(str(t.get("name")) for t in tools)))
        log.info("mcp server %s pinned at %s (%d tools)", name, digest[:16], len(tools))
        return self._server_status(name, state, self._served())


def _pin_refusal(aid: str, server: str, pinned: str) -> str:
    if pinned == "unpinned":
        return f"{aid}: MCP server {server} has not been approved; review it and run `machina mcp pin {server}`"
    return (
        f"{aid}: MCP server {server} changed its tool definitions since they were pinned: its tools are "
        f"disabled until an operator reviews them and runs `machina mcp pin {server}`"
    )


def _name_problem(name: str) -> str:
    if not name or len(name) > MAX_NAME_CHARS:
        return f"its name is empty or longer than {MAX_NAME_CHARS} characters"
    if _clean(name) != name:
        return "its name holds control characters"
    return ""


def _schema_problem(schema: Any) -> str:
    if schema is None:
        return ""
    if not isinstance(schema, dict):
        return "its inputSchema is not a JSON object"
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"its inputSchema is not a valid JSON Schema ({exc.message[:200]})"
    return ""


def _clean(text: str) -> str:
    """A description as plain display text: no control or format characters (no terminal escapes, no
    invisible text), cut.  Still untrusted: it describes, it never grants."""
    kept = "".join(ch if ch in "\n\t" or unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return kept[:DESCRIPTION_CHARS]

"""``ToolhostClient``: the machina.toolapi.ToolClient every component uses to run tools.

    client = ToolhostClient(root.socket_path("toolhost"), timeout=cfg["MACHINA_TOOLHOST_TIMEOUT"])
    reply = client.call("AID.FILE.READ.v1", {"path": "data/app.log"}, request_id=rid, run_id=run)
    if reply.ok: ...

Thread-safe: each thread gets its own connection, opened on first use and kept.  A toolhost that is not
running (or stops answering) raises :class:`machina.ipc.jsonlines.ServiceUnavailable` (exit 69/75): that is
an infrastructure failure to retry, not a tool result.  Refusals come back as replies (``denied``,
``approval_required`` ...); only the lease operations turn a refusal into a :class:`ToolhostError`.
"""

from __future__ import annotations

import threading
from typing import Any

from machina import toolapi
from machina.exitcodes import ExitCode, MachinaError
from machina.ipc.jsonlines import JsonLineClient
from machina.toolapi import ToolReply
from machina.toolhost.leases import inputs_digest as digest_of_call
from machina.toolhost.protocol import (
    BAD_REQUEST,
    OP_LEASE_GC,
    OP_LEASE_ISSUE,
    OP_MCP_PIN,
    OP_MCP_RELOAD,
    OP_MCP_STATUS,
    OP_PING,
    OP_TOOLS_LIST,
    CallRequest,
)

# A reply carries a tool's output: up to MACHINA_SHELL_STDOUT_MAX + _STDERR_MAX (64 MiB each), JSON-escaped.
MAX_REPLY_BYTES = 512 * 1024 * 1024

EXIT_BY_STATUS = {
    toolapi.OK: ExitCode.OK,
    toolapi.TOOL_ERROR: ExitCode.FAILURE,
    toolapi.INVALID_INPUT: ExitCode.DATAERR,
    BAD_REQUEST: ExitCode.USAGE,
    toolapi.UNKNOWN_TOOL: ExitCode.NOTFOUND,
    toolapi.DENIED: ExitCode.NOPERM,
    toolapi.APPROVAL_REQUIRED: ExitCode.NOPERM,
    toolapi.LEASE_REQUIRED: ExitCode.NOPERM,
    toolapi.FORBIDDEN: ExitCode.NOPERM,
    toolapi.TIMEOUT: ExitCode.TEMPFAIL,
    toolapi.SANDBOX_ERROR: ExitCode.UNAVAILABLE,
    toolapi.INTERNAL_ERROR: ExitCode.SOFTWARE,
}


def exit_code_for(status: str) -> ExitCode:
    return EXIT_BY_STATUS.get(status, ExitCode.SOFTWARE)


class ToolhostError(MachinaError):
    """A non-call operation was refused; ``status`` is the toolhost's."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"toolhost: {message}", exit_code_for(status))
        self.status = status


class ToolhostClient:
    def __init__(self, socket_path: str, timeout: float = 90.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> JsonLineClient:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = JsonLineClient(self.socket_path, timeout=self.timeout, max_line=MAX_REPLY_BYTES)
            self._local.conn = conn
        return conn

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one raw protocol message; the raw reply."""
        return self._conn().call(message)

    def call(
        self,
        aid: str,
        inputs: dict[str, Any],
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> ToolReply:
        """Run one tool.  ``capabilities``: the calling job's ``_capabilities`` (narrows QUEUE.ENQUEUE)."""
        message = CallRequest(aid, inputs, request_id, run_id, lease_token, idempotency_key, capabilities).to_wire()
        return ToolReply.from_wire(self.request(message))

    def _op(self, message: dict[str, Any]) -> dict[str, Any]:
        reply = self.request(message)
        if reply.get("ok") is not True:
            raise ToolhostError(str(reply.get("status")), str(reply.get("error") or "refused"))
        output = reply.get("output")
        return output if isinstance(output, dict) else {}

    def list_tools(self) -> list[dict[str, Any]]:
        """Every runnable tool: aid, name, tier, tags, inputs_schema, path (pool/fresh/shell/plugin), permission."""
        return list(self._op({"op": OP_TOOLS_LIST})["tools"])

    def refused_plugins(self) -> list[dict[str, str]]:
        return list(self._op({"op": OP_TOOLS_LIST})["refused"])

    def issue_lease(
        self,
        aid: str,
        tier: int,
        ttl_ms: int,
        *,
        inputs: dict[str, Any] | None = None,
        inputs_digest: str | None = None,
    ) -> dict[str, Any]:
        """A single-use lease (administrative peers only): ``{"lease_token", "lease_id", "expires_at", ...}``.

        With ``inputs`` the lease is bound to that one call: it approves ``aid`` with exactly these inputs.
        ``inputs_digest`` (machina.toolhost.leases.inputs_digest, already computed) binds it the same way.
        """
        if inputs is not None and inputs_digest is not None:
            raise ValueError("give inputs or inputs_digest, not both")
        message: dict[str, Any] = {"op": OP_LEASE_ISSUE, "aid": aid, "tier": tier, "ttl_ms": ttl_ms}
        if inputs is not None:
            message["inputs_digest"] = digest_of_call(aid, inputs)
        elif inputs_digest is not None:
            message["inputs_digest"] = inputs_digest
        return self._op(message)

    def gc_leases(self) -> int:
        """Remove expired leases (administrative peers only); how many were removed."""
        return int(self._op({"op": OP_LEASE_GC})["removed"])

    def ping(self) -> dict[str, Any]:
        return self._op({"op": OP_PING})

    def mcp_status(self) -> dict[str, Any]:
        """The MCP bridge's servers, pins and tools (what `machina mcp ls` and /mcp_status show)."""
        return self._op({"op": OP_MCP_STATUS})

    def mcp_pin(self, server: str, digest: str | None = None) -> dict[str, Any]:
        """Approve a server's current tool definitions (administrative peers only)."""
        message: dict[str, Any] = {"op": OP_MCP_PIN, "server": server}
        if digest is not None:
            message["digest"] = digest
        return self._op(message)

    def mcp_reload(self) -> dict[str, Any]:
        """Re-read mcp_servers.json and restart every MCP server (administrative peers only)."""
        return self._op({"op": OP_MCP_RELOAD})

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> ToolhostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The machina-toolhost wire protocol: one JSON object per line each way, over a Unix stream socket.

Tool call (any allowed peer)::

    {"aid": "AID.FILE.READ.v1", "inputs": {"path": "data/app.log"}, "request_id": "r-1", "run_id": "run-9",
     "lease_token": "mlease_...", "idempotency_key": "k-1", "capabilities": {"allowed_tools": ["AID.FILE.*"]}}

``aid`` and ``inputs`` are required; ``request_id``/``run_id`` (strings, at most 256 characters) travel into
logs and memory records; ``lease_token`` approves an "ask" call or satisfies MACHINA_LEASE_ENFORCE;
``idempotency_key`` makes a retry return the first reply; ``capabilities`` is the calling job's
``_capabilities`` (only AID.QUEUE.ENQUEUE.v1 uses it, to narrow the job it starts).

Reply (every request)::

    {"ok": true, "status": "ok", "output": {...}, "error": "", "duration_ms": 1.2}

``status`` is one of the machina.toolapi strings (ok, tool_error, invalid_input, unknown_tool, denied,
approval_required, lease_required, timeout, sandbox_error, forbidden, internal_error) or ``bad_request``
for a malformed request.  A repeated idempotent call adds ``"replayed": true``.

Other operations carry ``op``:

    {"op": "_tools.list"}
        any allowed peer; output {"tools": [...], "refused": [{"file", "reason"}]}
    {"op": "_lease.issue", "aid": AID or "*", "tier": 0-3, "ttl_ms": N, "inputs_digest": HEX (optional)}
        administrative peers only; output {"lease_token", "lease_id", "aid", "tier", "expires_at",
        "inputs_digest", ...}.  With ``inputs_digest`` (machina.toolhost.leases.inputs_digest: hex SHA-256 of
        the canonical JSON of {"aid": AID, "inputs": INPUTS}) the lease approves only that one call; a call
        with other inputs is refused and the lease kept.
    {"op": "_lease.gc"}
        administrative peers only; output {"removed": N, "remaining": N}
    {"op": "_ping"}
        any allowed peer; output {"pid", "status"}
    {"op": "_mcp.status"}
        any allowed peer; output the MCP bridge's status (machina.mcp.bridge.McpBridge.status): config,
        servers with state, pin ("unpinned", "pinned", "changed"), live and pinned digests, tools
    {"op": "_mcp.pin", "server": NAME, "digest": HEX (optional)}
        administrative peers only; approves the server's tool definitions as listed now (with ``digest``:
        only if they still hash to it); output that server's status
    {"op": "_mcp.reload"}
        administrative peers only; reads MACHINA_MCP_CONFIG again, restarts every server, waits for them
        to connect (at most MACHINA_MCP_CONNECT_TIMEOUT_MS); output the status

The earlier runtime's form ``{"aid": "_lease.issue", "inputs": {"tool_aid", "tier", "ttl_ms"}}`` is accepted
too.  A peer that is not allowed at all gets one ``forbidden`` reply and the connection is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machina.toolhost.leases import is_digest

OP_CALL = "call"
OP_TOOLS_LIST = "_tools.list"
OP_LEASE_ISSUE = "_lease.issue"
OP_LEASE_GC = "_lease.gc"
OP_PING = "_ping"
OP_MCP_STATUS = "_mcp.status"
OP_MCP_PIN = "_mcp.pin"
OP_MCP_RELOAD = "_mcp.reload"
OPS = (OP_CALL, OP_TOOLS_LIST, OP_LEASE_ISSUE, OP_LEASE_GC, OP_PING, OP_MCP_STATUS, OP_MCP_PIN, OP_MCP_RELOAD)
ADMIN_OPS = (OP_LEASE_ISSUE, OP_LEASE_GC, OP_MCP_PIN, OP_MCP_RELOAD)
BAD_REQUEST = "bad_request"
MAX_ID_CHARS = 256


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class CallRequest:
    aid: str
    inputs: dict[str, Any]
    request_id: str | None = None
    run_id: str | None = None
    lease_token: str | None = None
    idempotency_key: str | None = None
    capabilities: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"aid": self.aid, "inputs": self.inputs}
        for key in ("request_id", "run_id", "lease_token", "idempotency_key", "capabilities"):
            value = getattr(self, key)
            if value is not None:
                wire[key] = value
        return wire


def op_of(request: dict[str, Any]) -> str:
    op = request.get("op")
    if op is None:
        aid = request.get("aid")
        return aid if isinstance(aid, str) and aid.startswith("_") else OP_CALL
    if op not in OPS:
        raise BadRequest(f"unknown op {op!r}: expected one of {', '.join(OPS)}")
    return str(op)


def parse_call(request: dict[str, Any]) -> CallRequest:
    aid = request.get("aid")
    if not isinstance(aid, str) or not aid:
        raise BadRequest("aid must be a non-empty string")
    inputs = request.get("inputs", {})
    if not isinstance(inputs, dict):
        raise BadRequest("inputs must be a JSON object")
    capabilities = request.get("capabilities")
    if capabilities is not None and not _is_capabilities(capabilities):
        raise BadRequest('capabilities must be {"allowed_tools": [...], "blocked_tools": [...]}')
    return CallRequest(
        aid=aid,
        inputs=inputs,
        request_id=_optional_text(request, "request_id"),
        run_id=_optional_text(request, "run_id"),
        lease_token=_optional_text(request, "lease_token"),
        idempotency_key=_optional_text(request, "idempotency_key"),
        capabilities=capabilities,
    )


@dataclass(frozen=True)
class LeaseIssue:
    aid: str
    tier: int
    ttl_ms: int
    inputs_digest: str | None = None


def parse_lease_issue(request: dict[str, Any]) -> LeaseIssue:
    """The lease asked for, from either form of the request."""
    if request.get("op") is None:  # the earlier runtime's form
        inputs = request.get("inputs")
        if not isinstance(inputs, dict):
            raise BadRequest("inputs must be a JSON object")
        aid, tier, ttl = inputs.get("tool_aid"), inputs.get("tier"), inputs.get("ttl_ms")
        bound = inputs.get("inputs_digest")
    else:
        aid, tier, ttl = request.get("aid"), request.get("tier"), request.get("ttl_ms")
        bound = request.get("inputs_digest")
    if not isinstance(aid, str) or not aid:
        raise BadRequest('aid must be an AID or "*"')
    if not isinstance(tier, int) or isinstance(tier, bool) or not 0 <= tier <= 3:
        raise BadRequest("tier must be an integer from 0 to 3")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise BadRequest("ttl_ms must be a positive integer")
    if bound is not None and not is_digest(bound):
        raise BadRequest("inputs_digest must be a SHA-256 in hex (64 lowercase hex digits)")
    return LeaseIssue(aid, tier, ttl, bound)


def parse_mcp_pin(request: dict[str, Any]) -> tuple[str, str | None]:
    server = request.get("server")
    if not isinstance(server, str) or not server or len(server) > MAX_ID_CHARS:
        raise BadRequest("server must be the name of an MCP server")
    digest = request.get("digest")
    if digest is not None and not is_digest(digest):
        raise BadRequest("digest must be a SHA-256 in hex (64 lowercase hex digits)")
    return server, digest


def _optional_text(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{key} must be a string of 1 to {MAX_ID_CHARS} characters")
    return value


def _is_capabilities(value: Any) -> bool:
    if not isinstance(value, dict) or set(value) - {"allowed_tools", "blocked_tools"}:
        return False
    return all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in value.values())


def reply(
    status: str, output: dict[str, Any] | None = None, error: str = "", duration_ms: float = 0.0
) -> dict[str, Any]:
    return {
        "ok": status == "ok",
        "status": status,
        "output": output or {},
        "error": error,
        "duration_ms": round(duration_ms, 3),
    }

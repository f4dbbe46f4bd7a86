"""The tool-call interface every caller uses (worker, CLI, chat, Telegram, autonomic).

There is one way to run a tool: through machina-toolhost.  ``ToolClient`` is the seam; the production
implementation is ``machina.toolhost.client.ToolhostClient`` (a Unix-socket client).  The wire shapes
mirror the toolhost protocol: request ``{aid, inputs, request_id, run_id, lease_token?, idempotency_key?,
capabilities?}``, reply ``{ok, status, output, error, duration_ms}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Reply statuses (the ``status`` field).  ``ok`` is the only success.
OK = "ok"
TOOL_ERROR = "tool_error"  # the tool ran and failed (bad file, non-zero exit, HTTP refused ...)
INVALID_INPUT = "invalid_input"  # inputs did not match the manifest's inputs_schema
UNKNOWN_TOOL = "unknown_tool"
DENIED = "denied"  # the permission mode denies this tool
APPROVAL_REQUIRED = "approval_required"  # "ask": present a lease to run it
LEASE_REQUIRED = "lease_required"  # MACHINA_LEASE_ENFORCE=1 and no valid lease
TIMEOUT = "timeout"
SANDBOX_ERROR = "sandbox_error"  # the sandbox could not be set up (bwrap missing and required ...)
FORBIDDEN = "forbidden"  # the peer is not allowed to call the toolhost at all
INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class ToolReply:
    ok: bool
    status: str
    output: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    duration_ms: float = 0.0

    @classmethod
    def from_wire(cls, reply: dict[str, Any]) -> ToolReply:
        output = reply.get("output")
        return cls(
            ok=bool(reply.get("ok")),
            status=str(reply.get("status") or (OK if reply.get("ok") else INTERNAL_ERROR)),
            output=output if isinstance(output, dict) else {},
            error=str(reply.get("error") or ""),
            duration_ms=float(reply.get("duration_ms") or 0.0),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


class ToolClient(Protocol):
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
        """Run one tool.  ``capabilities`` is the calling job's ``_capabilities``: a tool that acts on the
        job's behalf (AID.QUEUE.ENQUEUE.v1) can only narrow them, never widen them."""
        ...

"""What a turn tells its front end, in order: text as it streams, tool calls, approval requests, the end.

Every event has a ``kind`` and :meth:`to_json` (what ``machina chat --json`` prints, one object a line):

- ``delta``: a piece of the model's answer while it streams (not printed by ``--json``);
- ``reply``: the turn's whole answer (``source`` says who wrote it: ``model``, ``fast_path``, ``fallback``);
- ``tool``: a tool call ``started``, then its ``result`` (ok, status, error, a preview of the output);
- ``approval``: a call needs a human's yes (:class:`~machina.agent.approval.ApprovalRequest`), then
  ``decided`` with what became of it;
- ``config``: the model (through a chat driver) proposed a change of backend, model or temperature
  (:class:`~machina.agent.config_change.ConfigProposal`), then ``decided`` with what was applied;
- ``error``: something went wrong that the human should see (the turn may go on);
- ``done``: the turn ended, with its stop reason (:data:`STOP_REASONS`), cycles used and seconds taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from machina.agent.approval import ApprovalRequest
    from machina.agent.config_change import ConfigProposal

# Why a turn ended.
ANSWERED = "answered"  # the model (or the fast path, or the fallback) gave its final answer
MAX_CYCLES = "max_cycles"  # MACHINA_MAX_CYCLES model calls without a final answer
BUDGET = "budget"  # MACHINA_PULSE_BUDGET_S passed
CANCELLED = "cancelled"  # cancel() (Ctrl-C, /stop)
REPEATED_CALL = "repeated_call"  # the model asked for the same call REPEAT_LIMIT times
ERRORS = "errors"  # ERROR_LIMIT failed calls in a row
MODEL_ERROR = "model_error"  # the model answered something unusable, or refused the request
UNAVAILABLE = "unavailable"  # no model answered and no fallback rule applied
STOP_REASONS = (ANSWERED, MAX_CYCLES, BUDGET, CANCELLED, REPEATED_CALL, ERRORS, MODEL_ERROR, UNAVAILABLE)


@dataclass(frozen=True)
class TextDelta:
    text: str
    kind: str = "delta"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "text": self.text}


@dataclass(frozen=True)
class Reply:
    text: str
    source: str  # model | fast_path | distilled | fallback
    kind: str = "reply"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "text": self.text, "source": self.source}


@dataclass(frozen=True)
class ToolStarted:
    call_id: str
    aid: str
    inputs: dict[str, Any]
    kind: str = "tool"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "phase": "started", "call_id": self.call_id, "aid": self.aid, "inputs": self.inputs}


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    aid: str
    ok: bool
    status: str
    error: str = ""
    preview: str = ""
    duration_ms: float = 0.0
    kind: str = "tool"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "phase": "result",
            "call_id": self.call_id,
            "aid": self.aid,
            "ok": self.ok,
            "status": self.status,
            "error": self.error,
            "preview": self.preview,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True)
class ApprovalNeeded:
    """Answer it with ``request.allow_once()`` or ``request.deny()`` before asking for the next event."""

    request: ApprovalRequest
    kind: str = "approval"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "phase": "asked", **self.request.to_json()}


@dataclass(frozen=True)
class ApprovalDecided:
    call_id: str
    aid: str
    decision: str  # allow_once | deny | timeout | no_human
    detail: str = ""
    kind: str = "approval"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "phase": "decided",
            "call_id": self.call_id,
            "aid": self.aid,
            "decision": self.decision,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ConfigProposed:
    """The model proposed a change of backend, model or temperature: ``proposal.confirm()`` to apply it."""

    proposal: ConfigProposal
    kind: str = "config"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "phase": "proposed", **self.proposal.to_json()}


@dataclass(frozen=True)
class ConfigDecided:
    applied: dict[str, Any]
    kind: str = "config"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "phase": "decided", "applied": self.applied}


@dataclass(frozen=True)
class Error:
    message: str
    kind: str = "error"

    def to_json(self) -> dict[str, Any]:
        return {"event": self.kind, "message": self.message}


@dataclass(frozen=True)
class Done:
    reason: str
    cycles: int
    elapsed_s: float
    detail: str = ""
    tools: tuple[str, ...] = field(default=())
    kind: str = "done"

    @property
    def answered(self) -> bool:
        return self.reason == ANSWERED

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "reason": self.reason,
            "cycles": self.cycles,
            "elapsed_s": round(self.elapsed_s, 3),
            "detail": self.detail,
            "tools": list(self.tools),
        }


Event = (
    TextDelta
    | Reply
    | ToolStarted
    | ToolResult
    | ApprovalNeeded
    | ApprovalDecided
    | ConfigProposed
    | ConfigDecided
    | Error
    | Done
)

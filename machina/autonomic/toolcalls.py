"""How the autonomic engine acts: every action is a real tool call through the toolhost, recorded as an
experience (``source: autonomic``), so L1 Reflect and the reward tracker see it like any other use.

The engine holds no lease and cannot approve anything: a tool that needs an approval answers
``approval_required`` and that is the outcome ("ask" without a human means no; AGENT.md fault 1).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from machina.clock import Clock
from machina.ipc.jsonlines import ServiceUnavailable
from machina.memory.streams import append
from machina.toolapi import ToolReply

log = logging.getLogger(__name__)
PREVIEW_CHARS = 300
UNAVAILABLE = "unavailable"


class ToolCaller(Protocol):
    def call(self, aid: str, inputs: dict[str, Any], *, request_id: str | None = None) -> ToolReply: ...


class ToolUse:
    def __init__(self, client: ToolCaller, memory_dir: str, clock: Clock, *, fsync: bool) -> None:
        self.client = client
        self.memory_dir = memory_dir
        self.clock = clock
        self.fsync = fsync

    def call(self, aid: str, inputs: dict[str, Any], *, why: str, request_id: str | None = None) -> ToolReply:
        """Run ``aid`` through the toolhost and record the experience; a toolhost that is down is a failed call."""
        started = self.clock.monotonic()
        try:
            reply = self.client.call(aid, inputs, request_id=request_id)
        except ServiceUnavailable as exc:
            reply = ToolReply(ok=False, status=UNAVAILABLE, error=f"toolhost unavailable: {exc}")
        elapsed = max(0.0, self.clock.monotonic() - started)
        record = {
            "user_request": why,
            "tool_used": aid,
            "success": reply.ok,
            "elapsed_sec": round(elapsed, 3),
            "source": "autonomic",
            "intent_type": "autonomic",
            "result_preview": (reply.error if not reply.ok else _preview(reply.output))[:PREVIEW_CHARS],
        }
        append(self.memory_dir, "experiences", record, request_id=request_id, fsync=self.fsync, clock=self.clock)
        if not reply.ok:
            log.info("autonomic: %s -> %s: %s", aid, reply.status, reply.error[:200])
        return reply


def _preview(output: dict[str, Any]) -> str:
    return json.dumps(output, sort_keys=True, ensure_ascii=False, default=str)

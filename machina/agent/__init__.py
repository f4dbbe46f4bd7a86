"""The agent core every front end shares (``machina chat``, the Telegram bot): sessions, the Pulse loop,
approvals, the LLM-free fast path and fallback, and policy distillation.

    from machina.agent import Session, Limits
    session = Session(open_backend(cfg), ToolhostClient(socket), Limits.from_config(cfg), memory_dir=root.memory)
    for event in session.send(text): ...

See machina.agent.session for the turn, machina.agent.events for what a front end receives.
"""

from __future__ import annotations

from machina.agent.approval import ApprovalRequest
from machina.agent.distill import Rule, distill_rules, lookup_distilled, recent_experiences
from machina.agent.limits import Limits
from machina.agent.session import Session

__all__ = [
    "ApprovalRequest",
    "Limits",
    "Rule",
    "Session",
    "distill_rules",
    "lookup_distilled",
    "recent_experiences",
]

"""Self-questioning: the model looks at recent state and names the next thing to do.

Actions: ``search`` (a web query for L6), ``test_tool`` (one call of a listed tool), ``code`` (a snippet for
``AID.CODE.EXEC.v1``), ``reflect`` (L1 now).  The answer is untrusted; the engine carries it out only
through the toolhost.  Guards:

- **dedup**: the same action and argument within ``DEDUP_S`` is a no-op;
- **no-op classification**: an empty argument (for anything but ``reflect``) or a duplicate does nothing
  and counts as a stalled turn;
- **cooldown and backoff**: at least ``COOLDOWN_S`` between questions, doubled after each failure up to
  ``MAX_BACKOFF_S``, reset by a success;
- at most 3 per burst (machina.autonomic.burst.MAX_SELF_QUESTIONS).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

ACTIONS = ("search", "test_tool", "code", "reflect")
DEDUP_S = 3600.0
COOLDOWN_S = 300.0
MAX_BACKOFF_S = 3600.0
SCHEMA = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"enum": list(ACTIONS)},
        "arg": {"type": "string", "maxLength": 4000},
        "inputs": {"type": "object"},
        "why": {"type": "string", "maxLength": 2000},
    },
}
SYSTEM = (
    "You are the self-improvement loop of the Machina runtime. From the state below, choose ONE next action "
    'as JSON {"action": "search"|"test_tool"|"code"|"reflect", "arg": ..., "inputs": {...}, "why": ...}: '
    "search = a web query to learn something missing; test_tool = arg is a listed tool's AID, inputs its "
    "inputs; code = arg is a short Python snippet to try; reflect = review tool statistics."
)


@dataclass(frozen=True)
class Question:
    action: str
    arg: str
    inputs: dict[str, Any]


def key(question: Question) -> str:
    return hashlib.sha256(f"{question.action}\0{question.arg.strip()}".encode()).hexdigest()[:24]


def parse(answer: dict[str, Any]) -> Question:
    inputs = answer.get("inputs")
    return Question(str(answer.get("action")), str(answer.get("arg") or ""), inputs if isinstance(inputs, dict) else {})


def noop_reason(question: Question, recent: dict[str, float], now: float) -> str | None:
    if question.action not in ACTIONS:
        return f"unknown action {question.action[:40]!r}"
    if question.action != "reflect" and not question.arg.strip():
        return f"{question.action} without an argument"
    at = recent.get(key(question))
    if at is not None and now - at < DEDUP_S:
        return f"the same {question.action} was asked {now - at:.0f} s ago"
    return None


def ready(next_allowed: float, now: float) -> bool:
    return now >= next_allowed


def after(ok: bool, failures: int, now: float) -> tuple[int, float]:
    """The failure count and the earliest next question after an outcome."""
    failures = 0 if ok else failures + 1
    wait = min(MAX_BACKOFF_S, COOLDOWN_S * (2**failures))
    return failures, now + wait


def state_summary(levels: dict[str, Any], insights: list[dict[str, Any]], failures: list[str], tools: list[str]) -> str:
    rules: list[str] = []
    for entry in insights[-3:]:
        rules.extend((entry.get("record") or {}).get("rules") or [])
    lines = [
        "levels: " + "; ".join(f"{name}: {rec.last_outcome}" for name, rec in sorted(levels.items())),
        "rules: " + "; ".join(rules[:10]),
        "recent failures: " + "; ".join(f[:200] for f in failures[-5:]),
        "tools: " + ", ".join(tools[:60]),
    ]
    return "\n".join(lines)

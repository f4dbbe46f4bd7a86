"""A tool call waiting for a human: the request a front end shows, and the answer it gives back.

"Ask" never means yes (AGENT.md faults 1 and 3).  The request starts undecided; only the front end's
:meth:`ApprovalRequest.allow_once` (or :meth:`~ApprovalRequest.allow_edited`, a yes for inputs the human
corrected) makes it a yes, and that yes is for this one call: the session turns it into a lease bound to
the AID and the inputs digest of exactly the approved inputs.  Everything else is a no:
:meth:`ApprovalRequest.deny`, no answer at all (no human: stdin not a terminal, a script, the front end
ignoring the event), or an answer given after ``MACHINA_PERMISSION_TIMEOUT_S`` (measured on the session's
clock, so a slow "yes" cannot revive a call the human was told had timed out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from machina.clock import Clock

ALLOW_ONCE = "allow_once"
ALWAYS = "always"  # answered in advance by a standing rule (machina.agent.always)
DENY = "deny"
TIMEOUT = "timeout"
NO_HUMAN = "no_human"


@dataclass
class ApprovalRequest:
    call_id: str
    aid: str
    tier: int
    inputs: dict[str, Any]
    reason: str  # the toolhost's words: why the call needs approval
    clock: Clock = field(repr=False)
    timeout_s: float
    asked_at: float = 0.0
    edited: dict[str, Any] | None = None
    always: bool = False
    _answer: str | None = field(default=None, repr=False)
    _answered_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.asked_at = self.clock.monotonic()

    @property
    def deadline(self) -> float:
        """``clock.monotonic()`` after which the request counts as refused."""
        return self.asked_at + self.timeout_s

    def seconds_left(self) -> float:
        return max(0.0, self.deadline - self.clock.monotonic())

    def allow_once(self) -> None:
        self._set(ALLOW_ONCE)

    def allow_always(self) -> None:
        """Yes, and a standing rule for exactly this call (this AID with these inputs) from now on."""
        if self._answer is None:
            self.always = True
        self._set(ALLOW_ONCE)

    def allow_edited(self, inputs: dict[str, Any]) -> None:
        """Yes, for this one call with the inputs the human wrote instead (checked again before it runs)."""
        if self._answer is None:
            self.edited = dict(inputs)
        self._set(ALLOW_ONCE)

    def approved_inputs(self) -> dict[str, Any]:
        """The inputs a yes applies to: the human's edit, else the call's own."""
        return dict(self.edited) if self.edited is not None else dict(self.inputs)

    def deny(self) -> None:
        self._set(DENY)

    def _set(self, answer: str) -> None:
        if self._answer is None:  # the first answer stands
            self._answer = answer
            self._answered_at = self.clock.monotonic()

    def decision(self) -> str:
        """``allow_once`` only for a yes given in time; otherwise ``deny``, ``timeout`` or ``no_human``."""
        if self._answer is None:
            return TIMEOUT if self.clock.monotonic() > self.deadline else NO_HUMAN
        assert self._answered_at is not None
        if self._answered_at > self.deadline:
            return TIMEOUT
        return self._answer

    def shown_inputs(self) -> str:
        """The full inputs, as the human must see them before saying yes (never cut short: fault 4)."""
        return json.dumps(self.inputs, indent=2, sort_keys=True, ensure_ascii=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "aid": self.aid,
            "tier": self.tier,
            "inputs": self.inputs,
            "reason": self.reason,
            "timeout_s": self.timeout_s,
        }

"""Strict replay's chooser: every step takes the decision the run log recorded, never asking a selector
or a policy.  A recorded pick names its AID; it is looked up on the new run's menu, so a menu that changed
shows up as a divergence rather than as a different tool silently picked under the same SID.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from machina.engine.selectors import PICK, Selection, StepContext
from machina.engine.selectors.chooser import Decision

DIVERGED = "replay_diverged"


class ReplayChooser:
    def __init__(self, selection_events: Iterable[dict[str, Any]]) -> None:
        self._events = list(selection_events)
        self._next = 0

    def decide(self, ctx: StepContext) -> Decision:
        if self._next >= len(self._events):
            return Decision(None, "REPLAY", ends=("failed", f"{DIVERGED}: the log has no step {ctx.step}"))
        event = self._events[self._next]
        self._next += 1
        ends = event.get("ends")
        chosen = event.get("chosen")
        if chosen is None:
            return Decision(None, "REPLAY", ends=(ends["status"], ends["reason"]) if ends else None)
        if chosen["kind"] != PICK:
            return Decision(Selection(chosen["kind"]), "REPLAY", event.get("raw", ""))
        entry = ctx.menu.by_aid(chosen["aid"])
        if entry is None:
            return Decision(
                None, "REPLAY", ends=("failed", f"{DIVERGED}: {chosen['aid']} is not on the menu at step {ctx.step}")
            )
        return Decision(Selection(PICK, entry.sid, chosen.get("patch")), "REPLAY", event.get("raw", ""))

    @property
    def unused(self) -> int:
        return len(self._events) - self._next

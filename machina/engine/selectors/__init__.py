"""Tool selectors: what to do next, given the goal, the menu and the run state.

A *selector* (``HEURISTIC``, ``GPU_CENTROID``) answers every step deterministically and never fails; it is
the fallback.  The external *policy* (MACHINA_POLICY_CMD) may be asked first, depending on the request's
control mode (see :mod:`machina.engine.selectors.chooser`).  Either answer is a :class:`Selection` in the
terms of the policy reply grammar: pick a SID (optionally with an input patch), ``NOOP`` or ``ASK_SUP``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.audit.canonical import canonical
from machina.engine.completion import pending
from machina.engine.menu import Menu
from machina.engine.request import ControlMode
from machina.engine.state import RunState
from machina.manifests.goals import GoalSpec
from machina.manifests.tools import ToolSpec

PICK = "PICK"
NOOP = "NOOP"
ASK_SUP = "ASK_SUP"


@dataclass(frozen=True)
class Selection:
    kind: str  # PICK, NOOP or ASK_SUP
    sid: str | None = None
    patch: dict[str, Any] | None = None
    by: str = field(default="", compare=False)  # the selector that made it, when not the one asked

    def render(self) -> str:
        """The selection written in the reply grammar (how a heuristic choice is logged as ``raw``)."""
        if self.kind != PICK:
            return f"<{self.kind}><END>"
        if self.patch is None:
            return f"<PICK><{self.sid}><END>"
        return f"<PICK><{self.sid}><INP>{canonical(self.patch).decode()}</INP><END>"


@dataclass(frozen=True)
class StepContext:
    """Everything a selector may look at for one step."""

    goal: GoalSpec
    menu: Menu
    state: RunState
    step: int
    control_mode: ControlMode
    tags: tuple[str, ...]  # the goal's candidate tags plus the request's
    tools: Mapping[str, ToolSpec] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()  # declared tools that answered "no implementation" in this run

    def pending(self) -> list[str]:
        return pending(self.goal, self.state, self.tools)

    def completed(self) -> list[str]:
        return sorted(self.state.outputs)


class Selector(Protocol):
    """A fallback selector: always answers, never raises for an ordinary step."""

    name: str

    def select(self, ctx: StepContext) -> Selection: ...

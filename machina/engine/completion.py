"""When a goal is complete: every requirement of ``complete_when.all_ok`` has succeeded once.

A requirement is an AID (that tool succeeded) or a tag (some tool carrying it succeeded).  A tool has
succeeded when the run state holds an output for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from machina.engine.state import RunState
from machina.manifests.goals import GoalSpec
from machina.manifests.tools import ToolSpec


def satisfies(tool: ToolSpec, requirement: str) -> bool:
    return tool.aid == requirement if requirement.startswith("AID.") else requirement in tool.tags


def is_met(requirement: str, state: RunState, tools: Mapping[str, ToolSpec]) -> bool:
    if requirement.startswith("AID."):
        return requirement in state.outputs
    return any(aid in tools and requirement in tools[aid].tags for aid in state.outputs)


def pending(goal: GoalSpec, state: RunState, tools: Mapping[str, ToolSpec]) -> list[str]:
    """Unmet requirements, in the goal's order."""
    return [r for r in goal.complete_when if not is_met(r, state, tools)]


def is_complete(goal: GoalSpec, state: RunState, tools: Mapping[str, ToolSpec]) -> bool:
    return not pending(goal, state, tools)

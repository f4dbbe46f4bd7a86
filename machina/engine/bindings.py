"""A tool's inputs for one call: the goal's bindings resolved against the run state, then the policy's patch.

See :mod:`machina.manifests.goals` for the binding format.  A tool the goal does not bind gets the request
inputs whose names its inputs_schema declares.  A policy's patch is laid over the bound inputs key by key;
keys starting with ``_`` are refused before a patch gets here (they are the suite's, never a tool's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machina.audit.canonical import copy_value
from machina.engine.state import RunState
from machina.manifests.goals import MISSING, Binding, GoalSpec, format_pointer
from machina.manifests.tools import ToolSpec


class NotReady(ValueError):
    """A required binding does not resolve yet (for example, the tool it reads has not run)."""


def unmet(goal: GoalSpec, tool: ToolSpec, state: RunState) -> list[str]:
    """The pointers of required bindings that do not resolve in ``state`` (empty: the tool is ready)."""
    return [
        format_pointer(b.ptr)
        for b in goal.bindings.get(tool.aid, {}).values()
        if b.required and b.ptr is not None and state.get(b.ptr) is MISSING and b.default is MISSING
    ]


def bound_inputs(goal: GoalSpec, tool: ToolSpec, state: RunState) -> dict[str, Any]:
    missing = unmet(goal, tool, state)
    if missing:
        raise NotReady(f"{tool.aid} needs {', '.join(missing)}, which the run state does not hold yet")
    bindings = goal.bindings.get(tool.aid)
    if bindings is None:
        return _declared_inputs(tool, state.inputs)
    inputs = {}
    for key, binding in bindings.items():
        value = _value(binding, state)
        if value is not MISSING:
            inputs[key] = copy_value(value)
    return inputs


def _value(binding: Binding, state: RunState) -> Any:
    if binding.ptr is None:
        return binding.value
    value = state.get(binding.ptr)
    return binding.default if value is MISSING else value


def _declared_inputs(tool: ToolSpec, inputs: Mapping[str, Any]) -> dict[str, Any]:
    declared = tool.inputs_schema.get("properties", {})
    return {k: copy_value(v) for k, v in inputs.items() if k in declared}


def apply_patch(inputs: Mapping[str, Any], patch: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(inputs)
    if patch:
        if any(key.startswith("_") for key in patch):
            raise ValueError("an input patch cannot set keys starting with '_'")
        merged.update(copy_value(dict(patch)))
    return merged

"""Genesis runs: a goal whose id starts with ``goal.GENESIS`` makes a tool and runs it, stage by stage.

The stages are the Genesis tools' (machina.toolhost.genesis), in order, then the made tool itself:

    (none) --WRITE_FILE--> WROTE --COMPILE_SHARED--> COMPILED --LOAD_PLUGIN--> LOADED --the tool--> RAN

The stage is kept in the run state's ``genesis`` slot (the earlier system kept it in its DS6 slot), written
by the engine in the same transaction as the successful call that reached it, so the run log's diff shows
every stage, the state digest covers it and strict replay checks it.  A new WRITE_FILE starts again at WROTE:
what was compiled or loaded before no longer counts.  Every stage is an ordinary tool call through the
toolhost, under its permission rules (COMPILE_SHARED and LOAD_PLUGIN are tier 3: "ask" stops the run for a
human) and its Genesis switch (MACHINA_GENESIS_ENABLE=0 refuses, as in the prod profile).

Two ways in:

- **make a tool** (``goal.GENESIS.v1``): the request's inputs carry the plugin (``name``, ``source``) and,
  optionally, ``run_inputs`` for the first run (default: its own acceptance test's inputs);
- **the missing-tool path**: a goal.GENESIS* goal requires a tool that is declared but has no implementation
  (the call answers ``unknown_tool``: a missing tool).  Genesis then writes a plugin for it: the request's
  ``source`` when given, else a stub made from its declaration (:mod:`machina.engine.autostub`), which says
  in every answer that it is one.  Once loaded, the declared tool is called again.

A goal.GENESIS* goal is complete when its ``complete_when`` is met and no tool it made is still waiting to
run (stage WROTE, COMPILED or LOADED).  This module decides; the loop (machina.engine.loop) applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from machina.engine.autostub import autostub_source
from machina.engine.state import RunState
from machina.manifests.goals import MISSING, GoalSpec
from machina.manifests.tools import ToolSpec

GOAL_PREFIX = "goal.GENESIS"
WRITE = "AID.GENESIS.WRITE_FILE.v1"
COMPILE = "AID.GENESIS.COMPILE_SHARED.v1"
LOAD = "AID.GENESIS.LOAD_PLUGIN.v1"
TOOLS = (WRITE, COMPILE, LOAD)
SLOT = ("genesis",)

WROTE, COMPILED, LOADED, RAN = "WROTE", "COMPILED", "LOADED", "RAN"
_NEXT_TOOL = {WROTE: COMPILE, COMPILED: LOAD}
UNFINISHED = (WROTE, COMPILED, LOADED)

MISSING_MARK = "has no implementation (a missing tool)"  # the toolhost's unknown_tool text for a declared tool


def applies(goal: GoalSpec) -> bool:
    return goal.goal_id.startswith(GOAL_PREFIX)


@dataclass(frozen=True)
class Slot:
    """The ``genesis`` slot of a run state (all None before the first stage)."""

    stage: str | None = None
    name: str | None = None
    sha256: str | None = None
    aid: str | None = None  # the tool the plugin provides (known from COMPILED on)
    test_inputs: Mapping[str, Any] | None = None
    tool: Mapping[str, Any] | None = None  # its declaration, as LOAD_PLUGIN reported it

    @classmethod
    def of(cls, state: RunState) -> Slot:
        value = state.get(SLOT)
        if value is MISSING or not isinstance(value, Mapping):
            return cls()
        return cls(**{k: value.get(k) for k in cls.__dataclass_fields__})

    def record(self, **changes: Any) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__} | changes
        return {k: v for k, v in data.items() if v is not None}


def after_success(state: RunState, aid: str, output: Mapping[str, Any]) -> dict[str, Any] | None:
    """The slot's value after ``aid`` answered ``output``, or None when the call moves no stage."""
    slot = Slot.of(state)
    if aid == WRITE:
        return Slot(WROTE, _text(output, "name"), _text(output, "sha256")).record()
    if aid == COMPILE and slot.stage == WROTE and output.get("name") == slot.name:
        inputs = output.get("test_inputs")
        return slot.record(
            stage=COMPILED, aid=_text(output, "aid"), test_inputs=inputs if isinstance(inputs, dict) else None
        )
    if aid == LOAD and slot.stage == COMPILED and output.get("name") == slot.name:
        tool = output.get("tool")
        return slot.record(stage=LOADED, tool=tool if isinstance(tool, dict) else None)
    if slot.stage == LOADED and aid == slot.aid:
        return slot.record(stage=RAN)
    return None


def unfinished(state: RunState) -> bool:
    """A tool this run made has not run yet: the goal is not complete, whatever else holds."""
    return Slot.of(state).stage in UNFINISHED


def stage_tool(state: RunState) -> str | None:
    """The tool the current stage calls for (None: no stage in progress)."""
    slot = Slot.of(state)
    if slot.stage == LOADED:
        return slot.aid
    return _NEXT_TOOL.get(slot.stage or "")


def is_stage_call(state: RunState, aid: str) -> bool:
    """Whether a call of ``aid`` from ``state`` is a Genesis stage (a Genesis tool, or the tool just loaded)."""
    return aid in TOOLS or aid == stage_tool(state)


def wants_write(state: RunState, missing: frozenset[str]) -> bool:
    """Whether to start a plugin: a missing tool met, or the request brought a source, and nothing started yet."""
    if Slot.of(state).stage is not None:
        return False
    return bool(missing) or isinstance(state.inputs.get("source"), str)


def made_tool(state: RunState) -> ToolSpec | None:
    """The tool LOAD_PLUGIN loaded, as a ToolSpec the run's menu can offer (from the toolhost's own report)."""
    record = Slot.of(state).tool
    if not record:
        return None
    try:
        return ToolSpec(
            aid=str(record["aid"]),
            name=str(record["name"]),
            tags=tuple(record.get("tags", ())),
            side_effects=tuple(record.get("side_effects", ())),
            deterministic=bool(record.get("deterministic", False)),
            inputs_schema=dict(record.get("inputs_schema") or {"type": "object"}),
            description=str(record.get("description", "")),
            pack="genesis",
        )
    except (KeyError, TypeError, ValueError):
        return None


class NoSource(ValueError):
    """WRITE_FILE has nothing to write: no source in the request and no missing tool to stub."""


def inputs_for(aid: str, state: RunState, missing: frozenset[str], tools: Mapping[str, ToolSpec]) -> dict[str, Any]:
    """The engine's inputs for a Genesis stage (used when the goal binds none for ``aid``)."""
    slot = Slot.of(state)
    if aid == WRITE:
        return _write_inputs(state, missing, tools)
    if aid in (COMPILE, LOAD):
        if not slot.name:
            raise NoSource(f"{aid} needs a plugin written by {WRITE} first")
        return {"name": slot.name}
    run_inputs = state.inputs.get("run_inputs")
    return dict(run_inputs if isinstance(run_inputs, dict) else slot.test_inputs or {})


def _write_inputs(state: RunState, missing: frozenset[str], tools: Mapping[str, ToolSpec]) -> dict[str, Any]:
    source, name = state.inputs.get("source"), state.inputs.get("name")
    target = min(missing) if missing else None
    if not isinstance(source, str):
        if target is None or target not in tools:
            raise NoSource(f"{WRITE} needs a source: none in the request's inputs and no missing tool to stub")
        source = autostub_source(tools[target])
    if not isinstance(name, str):
        name = "made_" + re.sub(r"[^a-z0-9]+", "_", (target or "tool").lower()).strip("_")
    return {"name": name, "source": source}


def _text(output: Mapping[str, Any], key: str) -> str | None:
    value = output.get(key)
    return value if isinstance(value, str) else None

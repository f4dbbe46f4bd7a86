"""``machina cts``: lint tool and goal manifests, one problem per line with a stable code.

=======  ===============================================================================================
CTS001   the manifest cannot be read or is not JSON
CTS002   the manifest breaks its JSON Schema (toolpack or goalpack)
CTS003   the file is neither a toolpack (``tools``) nor a goalpack (``goals``)
CTS101   a tool's inputs_schema is not a valid JSON Schema
CTS102   a tool's outputs_schema is not a valid JSON Schema
CTS103   an AID is declared twice
CTS201   a goal_id is declared twice
CTS202   a goal's inputs_schema is not a valid JSON Schema
CTS203   a binding's ptr is not a well-formed JSON Pointer
CTS204   a ``complete_when`` requirement names no known tool (unknown AID, or a tag no tool carries)
CTS205   a requirement cannot be met: no tool that meets it is on the goal's menu (no candidate tag)
CTS206   bindings for an unknown tool
CTS207   bindings for a tool that is not on the goal's menu
CTS208   a binding's key is not an input the tool accepts
CTS209   a binding reads ``/inputs/<key>`` that the goal's inputs_schema does not declare
CTS210   a binding reads ``/outputs/<AID>`` of a tool that is not on the goal's menu
CTS211   a tool the goal needs has a required input that nothing provides
CTS212   required bindings wait on each other in a cycle: the goal can never complete
CTS213   a binding's literal ``value`` or ``default`` breaks the tool's schema for that input
=======  ===============================================================================================

The built-in toolpack is always part of the tool set goals are checked against.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from machina.manifests import goals as goalmod
from machina.manifests.goals import MISSING, GoalSpec, goal_from_doc
from machina.manifests.schemacheck import check_schema
from machina.manifests.tools import TOOLPACK_SCHEMA, ToolSpec, builtin_toolpack, read_toolpack

DESCRIPTIONS = {
    line.split()[0]: line.split(None, 1)[1]
    for line in (__doc__ or "").splitlines()
    if line.startswith("CTS") and len(line.split()) > 1
}


@dataclass(frozen=True)
class Problem:
    source: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.code} {self.message}"


def _on_menu(goal: GoalSpec, tool: ToolSpec) -> bool:
    return bool(set(goal.candidate_tags).intersection(tool.tags))


def goal_problems(goal: GoalSpec, tools: Mapping[str, ToolSpec]) -> list[Problem]:
    """Checks of one goal against the tools (everything but its schema)."""
    problems: list[tuple[str, str]] = []
    menu = {aid: t for aid, t in tools.items() if _on_menu(goal, t)}
    problems += _requirement_problems(goal, tools, menu)
    for aid, bindings in goal.bindings.items():
        if aid not in tools:
            problems.append(("CTS206", f"bindings/{aid}: no such tool"))
        elif aid not in menu:
            problems.append(("CTS207", f"bindings/{aid}: the tool has none of the goal's candidate tags"))
        else:
            problems += _binding_problems(goal, tools[aid], bindings, menu)
    problems += _unprovided_inputs(goal, tools, menu)
    problems += _cycles(goal, menu)
    return [Problem(goal.source, code, f"{goal.goal_id}: {message}") for code, message in problems]


def _requirement_problems(
    goal: GoalSpec, tools: Mapping[str, ToolSpec], menu: Mapping[str, ToolSpec]
) -> list[tuple[str, str]]:
    problems = []
    for req in goal.complete_when:
        if req.startswith("AID."):
            known, reachable = req in tools, req in menu
        else:
            known = any(req in t.tags for t in tools.values())
            reachable = any(req in t.tags for t in menu.values())
        if not known:
            problems.append(("CTS204", f"complete_when: {req}: no tool is or carries it"))
        elif not reachable:
            problems.append(("CTS205", f"complete_when: {req}: no tool that meets it has a candidate tag"))
    return problems


def _binding_problems(
    goal: GoalSpec, tool: ToolSpec, bindings: Mapping[str, goalmod.Binding], menu: Mapping[str, ToolSpec]
) -> list[tuple[str, str]]:
    problems = []
    schema = tool.inputs_schema
    accepted = schema.get("properties", {})
    closed = schema.get("additionalProperties") is False
    declared = goal.inputs_schema.get("properties")
    for key, binding in bindings.items():
        where = f"bindings/{tool.aid}/{key}"
        if closed and key not in accepted:
            problems.append(("CTS208", f"{where}: {tool.aid} does not accept an input {key!r}"))
        ptr = binding.ptr or ()
        if ptr[:1] == ("inputs",) and len(ptr) > 1 and declared is not None and ptr[1] not in declared:
            problems.append(("CTS209", f"{where}: /inputs/{ptr[1]} is not declared by the goal's inputs_schema"))
        source = binding.source_aid
        if ptr[:1] == ("outputs",) and (source is None or source not in menu):
            problems.append(("CTS210", f"{where}: reads the output of {source or '?'}, which is not on the menu"))
        for label, value in (
            ("value", binding.value if binding.ptr is None else MISSING),
            ("default", binding.default),
        ):
            if value is not MISSING and key in accepted:
                errors = list(jsonschema.Draft202012Validator(accepted[key]).iter_errors(value))
                if errors:
                    problems.append(("CTS213", f"{where}: {label} {value!r}: {errors[0].message}"))
    return problems


def _unprovided_inputs(
    goal: GoalSpec, tools: Mapping[str, ToolSpec], menu: Mapping[str, ToolSpec]
) -> list[tuple[str, str]]:
    """Required inputs of the tools that can meet a requirement, which no binding (or request input) fills."""
    problems = []
    declared = goal.inputs_schema.get("properties", {})
    needed = [t for t in menu.values() if any(_meets(t, r) for r in goal.complete_when)]
    for tool in needed:
        bindings = goal.bindings.get(tool.aid)
        for key in tool.inputs_schema.get("required", []):
            provided = key in bindings if bindings is not None else key in declared
            if not provided:
                how = "bind it" if bindings is not None else "bind it, or declare it in the goal's inputs_schema"
                problems.append(("CTS211", f"{tool.aid} requires input {key!r} and nothing provides it ({how})"))
    return problems


def _meets(tool: ToolSpec, requirement: str) -> bool:
    return tool.aid == requirement if requirement.startswith("AID.") else requirement in tool.tags


def _cycles(goal: GoalSpec, menu: Mapping[str, ToolSpec]) -> list[tuple[str, str]]:
    """Tools whose required bindings wait, directly or not, on their own output."""
    waits = {
        aid: {b.source_aid for b in bindings.values() if b.required and b.source_aid and b.default is MISSING}
        for aid, bindings in goal.bindings.items()
        if aid in menu
    }
    problems = []
    for start in sorted(waits):
        seen, frontier = set(), set(waits[start])
        while frontier:
            aid = frontier.pop()
            if aid == start:
                problems.append(("CTS212", f"{start} waits on its own output through required bindings"))
                break
            if aid not in seen:
                seen.add(aid)
                frontier |= waits.get(aid, set())
    return problems


# --- files ---------------------------------------------------------------------------------------------------


def _read(path: str) -> tuple[Any, list[Problem]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle), []
    except (OSError, ValueError) as exc:
        return None, [Problem(path, "CTS001", f"cannot read manifest: {exc}")]


def _toolpack_problems(path: str, doc: Any) -> list[Problem]:
    validator = jsonschema.Draft202012Validator(TOOLPACK_SCHEMA)
    problems = [Problem(path, "CTS002", goalmod.describe(e)) for e in validator.iter_errors(doc)]
    if problems:
        return problems
    for tool in doc["tools"]:
        for field, code in (("inputs_schema", "CTS101"), ("outputs_schema", "CTS102")):
            try:
                check_schema(tool.get(field, {}))
            except jsonschema.SchemaError as exc:
                problems.append(
                    Problem(path, code, f"{tool['aid']}: {field} is not a valid JSON Schema: {exc.message}")
                )
    return problems


def lint(paths: Iterable[str]) -> list[Problem]:
    """Every problem in the given toolpack and goalpack manifests (the built-in toolpack always joins in)."""
    problems: list[Problem] = []
    toolpacks, goalpacks = [builtin_toolpack()], []
    for path in paths:
        doc, read_problems = _read(path)
        problems += read_problems
        if read_problems:
            continue
        if isinstance(doc, dict) and "tools" in doc:
            toolpacks.append(path)
        elif isinstance(doc, dict) and "goals" in doc:
            goalpacks.append((path, doc))
        else:
            problems.append(Problem(path, "CTS003", 'neither a toolpack ("tools") nor a goalpack ("goals")'))
    tools = _load_tool_set(toolpacks, problems)
    seen: dict[str, str] = {}
    for path, doc in goalpacks:
        schema = goalmod.schema_problems(doc)
        problems += [Problem(path, code, message) for code, message in schema]
        if schema:
            continue
        for raw in doc["goals"]:
            goal = goal_from_doc(raw, pack=doc["pack"], source=path)
            if goal.goal_id in seen:
                problems.append(Problem(path, "CTS201", f"{goal.goal_id} is already declared by {seen[goal.goal_id]}"))
                continue
            seen[goal.goal_id] = path
            problems += goal_problems(goal, tools)
    return problems


def _load_tool_set(toolpacks: list[str], problems: list[Problem]) -> dict[str, ToolSpec]:
    tools: dict[str, ToolSpec] = {}
    loaded = set()
    for path in toolpacks:
        real = os.path.realpath(path)
        if real in loaded:
            continue
        loaded.add(real)
        doc, read_problems = _read(path)
        pack_problems = read_problems or _toolpack_problems(path, doc)
        problems += pack_problems
        if pack_problems:
            continue
        for spec in read_toolpack(path):
            if spec.aid in tools:
                problems.append(Problem(path, "CTS103", f"{spec.aid} is already declared by {tools[spec.aid].source}"))
            else:
                tools[spec.aid] = spec
    return tools

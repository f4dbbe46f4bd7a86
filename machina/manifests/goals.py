"""Goal manifests (``goalpacks/<pack>/manifest.json``): what a goal needs, when it is complete, and where
each tool's inputs come from.

A goal names the ``candidate_tags`` that put tools on its menu, the ``inputs_schema`` its requests'
``inputs`` must match, the requirements that make it complete (``complete_when.all_ok``: AIDs, or tags any
of whose tools will do, that must each have succeeded once), its ``budget``, and ``bindings``: for each
tool, how each of its input keys is filled from the run state::

    "bindings": {"AID.REPORT_SUMMARY.v1": {
        "findings":    {"ptr": "/outputs/AID.ERROR_SCAN.v1", "required": true},
        "output_path": {"ptr": "/inputs/report_path"},
        "title":       {"value": "Error scan"}}}

``ptr`` is a JSON Pointer (RFC 6901) into the run state, whose only branches are ``/inputs`` (the request's
inputs) and ``/outputs/<AID>`` (the output of that tool's latest successful call).  A pointer that does not
resolve takes the binding's ``default`` if it has one, is left out otherwise, and, when ``required``, makes
the tool not ready to run yet (that is how "report after scan" is written).  A tool the goal does not bind
gets the request inputs whose names its inputs_schema declares.

Like tool manifests, goal manifests are validated with JSON Schema when they load (errors raise
:class:`machina.manifests.tools.ManifestError`); checks that need the tools as well are in
:mod:`machina.engine.cts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any

import jsonschema

from machina.audit.canonical import digest
from machina.manifests.packs import ManifestError, index_unique, pack_manifests, read_manifest_json
from machina.manifests.plainschema import SchemaValidator
from machina.manifests.schemacheck import check_schema
from machina.manifests.tools import AID_PATTERN, TAG_PATTERN, describe, schema_errors

GOAL_ID_PATTERN = r"^goal\.[A-Z0-9_]+(\.[A-Z0-9_]+)*\.v[0-9]+$"
POINTER_PATTERN = r"^/(inputs|outputs)(/.*)?$"
REQUIREMENT_PATTERN = f"({AID_PATTERN})|({TAG_PATTERN})"
INPUT_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"  # never "_...": those keys are the suite's, not a tool's

BINDING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ptr": {"type": "string", "pattern": POINTER_PATTERN, "maxLength": 1024},
        "value": {},
        "default": {},
        "required": {"type": "boolean"},
    },
    "oneOf": [{"required": ["ptr"]}, {"required": ["value"]}],
}

BUDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_steps": {"type": "integer", "minimum": 1, "maximum": 1000},
        "max_invalid_picks": {"type": "integer", "minimum": 0, "maximum": 1000},
        "max_repeats": {"type": "integer", "minimum": 1, "maximum": 100},
    },
}

GOAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["goal_id", "name", "candidate_tags", "complete_when"],
    "additionalProperties": False,
    "properties": {
        "goal_id": {"type": "string", "pattern": GOAL_ID_PATTERN},
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "description": {"type": "string", "maxLength": 2000},
        "candidate_tags": {
            "type": "array",
            "items": {"type": "string", "pattern": TAG_PATTERN},
            "minItems": 1,
            "uniqueItems": True,
        },
        "inputs_schema": {"type": "object"},
        "complete_when": {
            "type": "object",
            "required": ["all_ok"],
            "additionalProperties": False,
            "properties": {
                "all_ok": {
                    "type": "array",
                    "items": {"type": "string", "pattern": REQUIREMENT_PATTERN},
                    "minItems": 1,
                    "uniqueItems": True,
                }
            },
        },
        "bindings": {
            "type": "object",
            "propertyNames": {"pattern": AID_PATTERN},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"pattern": INPUT_KEY_PATTERN},
                "additionalProperties": BINDING_SCHEMA,
            },
        },
        "budget": BUDGET_SCHEMA,
    },
}

GOALPACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["pack", "goals"],
    "additionalProperties": False,
    "properties": {
        "pack": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]*$"},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "goals": {"type": "array", "items": GOAL_SCHEMA},
    },
}


class PointerError(ValueError):
    pass


def parse_pointer(ptr: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of ``ptr`` (``~1`` is ``/``, ``~0`` is ``~``)."""
    if not ptr.startswith("/"):
        raise PointerError(f"{ptr!r}: a JSON Pointer starts with '/'")
    tokens = []
    for token in ptr[1:].split("/"):
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise PointerError(f"{ptr!r}: '~' must be written ~0 or ~1")
        tokens.append(token.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def format_pointer(tokens: Iterable[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


_MISSING = object()


def resolve_pointer(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at ``tokens`` in ``doc``, or ``MISSING``."""
    node = doc
    for token in tokens:
        if isinstance(node, Mapping) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
    return node


MISSING = _MISSING


@dataclass(frozen=True)
class Binding:
    key: str
    ptr: tuple[str, ...] | None = None
    value: Any = None
    default: Any = MISSING
    required: bool = False

    @property
    def source_aid(self) -> str | None:
        """The tool whose output this binding reads (``/outputs/<AID>/...``), if any."""
        if self.ptr and len(self.ptr) >= 2 and self.ptr[0] == "outputs":
            return self.ptr[1]
        return None


@dataclass(frozen=True)
class Budget:
    max_steps: int = 16
    max_invalid_picks: int = 3
    max_repeats: int = 2  # how often the same call may be made from the same state (loop guard)


@dataclass(frozen=True)
class GoalSpec:
    goal_id: str
    name: str
    candidate_tags: tuple[str, ...]
    complete_when: tuple[str, ...]
    inputs_schema: dict[str, Any] = field(default_factory=dict)
    bindings: dict[str, dict[str, Binding]] = field(default_factory=dict)
    budget: Budget = Budget()
    description: str = ""
    pack: str = ""
    source: str = ""
    digest: str = ""

    @property
    def text(self) -> str:
        """What the goal is about, in words (for similarity-based selectors)."""
        return " ".join(filter(None, (self.description or self.name, *self.candidate_tags)))

    def input_errors(self, inputs: Any) -> list[str]:
        if not self.inputs_schema:
            return []
        return schema_errors(self._inputs_validator, inputs)

    @cached_property
    def _inputs_validator(self) -> Any:
        return SchemaValidator(self.inputs_schema)  # once per spec (see ToolSpec's)


# Stable problem codes (``machina cts`` prints them; see machina.engine.cts for the rest).
SCHEMA = "CTS002"  # the manifest breaks its JSON Schema
GOAL_INPUTS_SCHEMA = "CTS202"  # a goal's inputs_schema is not a JSON Schema
BAD_POINTER = "CTS203"  # a binding's ptr is not a well-formed JSON Pointer


def schema_problems(doc: Any) -> list[tuple[str, str]]:
    """(code, message) for every way ``doc`` is not a loadable goalpack."""
    problems = [(SCHEMA, describe(e)) for e in jsonschema.Draft202012Validator(GOALPACK_SCHEMA).iter_errors(doc)]
    if problems:
        return problems
    for goal in doc["goals"]:
        try:
            check_schema(goal.get("inputs_schema", {}))
        except jsonschema.SchemaError as exc:
            problems.append(
                (GOAL_INPUTS_SCHEMA, f"{goal['goal_id']}: inputs_schema is not a valid JSON Schema: {exc.message}")
            )
        for aid, keys in goal.get("bindings", {}).items():
            for key, raw in keys.items():
                if "ptr" in raw:
                    try:
                        parse_pointer(raw["ptr"])
                    except PointerError as exc:
                        problems.append((BAD_POINTER, f"{goal['goal_id']}: bindings/{aid}/{key}: {exc}"))
    return problems


def builtin_goalpack() -> str:
    """Path of the goalpack shipped inside the package (found there, never copied into a root)."""
    return str(resources.files("machina") / "data" / "goalpacks" / "builtin" / "manifest.json")


def goalpack_manifests(root_goalpacks: str | None) -> list[str]:
    """The built-in pack, then each ``<root>/goalpacks/<pack>/manifest.json`` in name order."""
    return pack_manifests(builtin_goalpack(), root_goalpacks)


def read_goalpack(path: str) -> list[GoalSpec]:
    doc = read_manifest_json(path)
    problems = schema_problems(doc)
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(message for _, message in problems))
    return [goal_from_doc(goal, pack=doc["pack"], source=path) for goal in doc["goals"]]


def goal_from_doc(goal: dict[str, Any], *, pack: str = "", source: str = "") -> GoalSpec:
    """A GoalSpec from one schema-valid goal entry."""
    budget = goal.get("budget", {})
    return GoalSpec(
        goal_id=goal["goal_id"],
        name=goal["name"],
        description=goal.get("description", ""),
        candidate_tags=tuple(goal["candidate_tags"]),
        complete_when=tuple(goal["complete_when"]["all_ok"]),
        inputs_schema=goal.get("inputs_schema", {}),
        bindings={
            aid: {key: _binding(key, raw) for key, raw in keys.items()}
            for aid, keys in goal.get("bindings", {}).items()
        },
        budget=Budget(**budget),
        pack=pack,
        source=source,
        digest=digest(goal),
    )


def _binding(key: str, raw: dict[str, Any]) -> Binding:
    return Binding(
        key=key,
        ptr=parse_pointer(raw["ptr"]) if "ptr" in raw else None,
        value=raw.get("value"),
        default=raw.get("default", MISSING),
        required=bool(raw.get("required", False)),
    )


def load_goals(manifests: Iterable[str]) -> dict[str, GoalSpec]:
    """All goals of the given manifests by goal_id; a goal_id declared twice is an error."""
    return index_unique(manifests, read_goalpack, lambda spec: spec.goal_id)

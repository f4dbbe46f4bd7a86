"""Tool manifests (``toolpacks/<pack>/manifest.json``): what a tool is, its tags, its side effects, its schemas.

A tool's permission tier is derived from its declared side effects, never declared directly, so a manifest
cannot call a shell tool "safe":

    tier 0 safe       none, fs_read, memory_read, proc_read
    tier 1 write      fs_write, memory_write, queue_write
    tier 2 system     network, process, gpu
    tier 3 dangerous  shell, privileged, code

``inputs_schema`` is checked (as a JSON Schema) when the manifest loads, and every call's inputs are
validated against it before the tool runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Any

import jsonschema

from machina.manifests.packs import ManifestError, index_unique, pack_manifests, read_manifest_json
from machina.manifests.plainschema import SchemaValidator
from machina.manifests.schemacheck import check_schema

EFFECT_TIERS: dict[str, int] = {
    "none": 0,
    "fs_read": 0,
    "memory_read": 0,
    "proc_read": 0,
    "fs_write": 1,
    "memory_write": 1,
    "queue_write": 1,
    "network": 2,
    "process": 2,
    "gpu": 2,
    "shell": 3,
    "privileged": 3,
    "code": 3,
}
TIER_NAMES = {0: "safe", 1: "write", 2: "system", 3: "dangerous"}

AID_PATTERN = r"^AID\.[A-Z0-9_]+(\.[A-Z0-9_]+)*\.v[0-9]+$"
TAG_PATTERN = r"^tag\.[a-z0-9_.-]+$"

TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["aid", "name", "tags", "side_effects", "deterministic", "inputs_schema"],
    "additionalProperties": False,
    "properties": {
        "aid": {"type": "string", "pattern": AID_PATTERN},
        "name": {"type": "string", "minLength": 1, "maxLength": 80},
        "description": {"type": "string", "maxLength": 2000},
        "tags": {"type": "array", "items": {"type": "string", "pattern": TAG_PATTERN}, "uniqueItems": True},
        "side_effects": {
            "type": "array",
            "items": {"enum": sorted(EFFECT_TIERS)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "deterministic": {"type": "boolean"},
        "inputs_schema": {"type": "object"},
        "outputs_schema": {"type": "object"},
        "sandbox": {"type": "object"},
    },
}

TOOLPACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["pack", "tools"],
    "additionalProperties": False,
    "properties": {
        "pack": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]*$"},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "tools": {"type": "array", "items": TOOL_SCHEMA},
    },
}


@dataclass(frozen=True)
class ToolSpec:
    aid: str
    name: str
    tags: tuple[str, ...]
    side_effects: tuple[str, ...]
    deterministic: bool
    inputs_schema: dict[str, Any]
    outputs_schema: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    sandbox: dict[str, Any] = field(default_factory=dict)
    pack: str = ""
    source: str = ""

    @property
    def tier(self) -> int:
        return tier_of(self.side_effects)

    def listing(self, **extra: Any) -> dict[str, Any]:
        """The tool as listings show it (``machina tool ls``, the toolhost's tools/list, Genesis's load report)."""
        return {
            "aid": self.aid,
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "side_effects": list(self.side_effects),
            "tier": self.tier,
            "tier_name": TIER_NAMES[self.tier],
            "deterministic": self.deterministic,
            "inputs_schema": self.inputs_schema,
            **extra,
        }

    def input_errors(self, inputs: Any) -> list[str]:
        """Every way ``inputs`` breaks the inputs_schema, as short readable lines (empty when valid)."""
        return schema_errors(self._inputs_validator, inputs)

    @cached_property
    def _inputs_validator(self) -> Any:
        # Built once per spec: building one per call was most of a call's validation (the toolhost checks
        # every call's inputs).  A validator is immutable, so the toolhost's threads share it.
        return SchemaValidator(self.inputs_schema)


def tier_of(side_effects: Iterable[str]) -> int:
    return max((EFFECT_TIERS[e] for e in side_effects), default=0)


def schema_errors(validator: Any, inputs: Any) -> list[str]:
    """Every way ``inputs`` breaks ``validator``'s schema, as ``path: message`` lines in path order (a tool's
    and a goal's inputs alike); empty when valid, which is checked first: the common case collects and
    sorts nothing."""
    if validator.is_valid(inputs):
        return []
    return [describe(e, "inputs") for e in sorted(validator.iter_errors(inputs), key=lambda e: list(e.absolute_path))]


def describe(error: jsonschema.ValidationError, top: str = "manifest") -> str:
    """One schema error as ``where: what``; ``top`` names the document when the error is about all of it."""
    where = "/".join(str(p) for p in error.absolute_path) or top
    return f"{where}: {error.message}"


def builtin_toolpack() -> str:
    """Path of the toolpack shipped inside the package."""
    return str(resources.files("machina") / "data" / "toolpacks" / "builtin" / "manifest.json")


def toolpack_manifests(root_toolpacks: str | None) -> list[str]:
    """The built-in pack, then each ``<root>/toolpacks/<pack>/manifest.json`` in name order."""
    return pack_manifests(builtin_toolpack(), root_toolpacks)


def read_toolpack(path: str) -> list[ToolSpec]:
    doc = read_manifest_json(path)
    problems = [describe(e) for e in jsonschema.Draft202012Validator(TOOLPACK_SCHEMA).iter_errors(doc)]
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems))
    specs = []
    for tool in doc["tools"]:
        try:
            check_schema(tool["inputs_schema"])
        except jsonschema.SchemaError as exc:
            raise ManifestError(
                f"{path}: {tool['aid']}: inputs_schema is not a valid JSON Schema: {exc.message}"
            ) from None
        specs.append(
            ToolSpec(
                aid=tool["aid"],
                name=tool["name"],
                tags=tuple(tool["tags"]),
                side_effects=tuple(tool["side_effects"]),
                deterministic=tool["deterministic"],
                inputs_schema=tool["inputs_schema"],
                outputs_schema=tool.get("outputs_schema", {}),
                description=tool.get("description", ""),
                sandbox=tool.get("sandbox", {}),
                pack=doc["pack"],
                source=path,
            )
        )
    return specs


def load_tools(manifests: Iterable[str]) -> dict[str, ToolSpec]:
    """All tools of the given manifests by AID; an AID declared twice is an error."""
    return index_unique(manifests, read_toolpack, lambda spec: spec.aid)

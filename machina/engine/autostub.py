"""A stub plugin for a declared tool that has no implementation (Genesis's missing-tool path).

The stub declares exactly the manifest's AID, name, tags and inputs_schema, asks for no capability (so it
runs at tier 0, in a sandbox with nothing to reach), and answers every call with ``{"stub": true, ...}``:
it says what it is, so no one mistakes its answer for the real tool's.  It carries an acceptance test whose
inputs are the smallest ones its schema accepts, so COMPILE_SHARED checks it like any Genesis plugin.

The source is built from literals only (``repr`` of plain data): a manifest's text cannot inject code, and
the Genesis guard finds no import and no call beyond ``sorted``.
"""

from __future__ import annotations

from typing import Any

from machina.manifests.tools import ToolSpec

_TEMPLATE = '''"""A stub for {aid}, made by Genesis's missing-tool path: replace it with a real implementation."""

MACHINA_PLUGIN = {declaration}

MACHINA_GENESIS_TEST = {test}


def run(inputs, host):
    return {{"stub": True, "aid": {aid_literal}, "received": sorted(inputs)}}
'''


def autostub_source(tool: ToolSpec) -> str:
    declaration = {
        "aid": tool.aid,
        "name": tool.name,
        "description": f"Stub for a declared tool with no implementation: {tool.description}"[:2000],
        "tags": list(tool.tags),
        "capabilities": [],
        "deterministic": True,
        "inputs_schema": tool.inputs_schema,
    }
    test = {"inputs": example_inputs(tool.inputs_schema), "expect": {"stub": True, "aid": tool.aid}}
    return _TEMPLATE.format(aid=tool.aid, aid_literal=repr(tool.aid), declaration=repr(declaration), test=repr(test))


def example_inputs(schema: dict[str, Any]) -> dict[str, Any]:
    """The smallest object the schema's ``required`` properties ask for (best effort: simple schemas)."""
    properties = schema.get("properties") or {}
    return {key: example_value(properties.get(key) or {}) for key in schema.get("required") or ()}


def example_value(schema: dict[str, Any]) -> Any:
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    if kind == "array":
        return [example_value(schema.get("items") or {}) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "null":
        return None
    return example_inputs(schema)

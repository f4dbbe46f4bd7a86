"""Find the plugins that may run: pinned, declared, within the allowed capabilities.  Nothing is executed.

Order of checks for each ``plugins/*.py``: the file is read once (no symlinks), its SHA-256 must equal the
pin (constant time) *before* the file is even parsed; the ``MACHINA_PLUGIN`` declaration is read with
``ast.literal_eval``; its capabilities (none declared = all) must be within MACHINA_PLUGIN_ALLOWED_CAPS;
its AID must be new.  A refused plugin is reported with its reason and never offered as a tool.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema

from machina.exitcodes import ExitCode, MachinaError
from machina.manifests.tools import AID_PATTERN, TAG_PATTERN, ToolSpec
from machina.plugins import caps as capabilities
from machina.plugins.pins import PinError, matches, read_pins, read_plugin_file

DECLARATION = "MACHINA_PLUGIN"
_KEYS = {"aid", "name", "description", "tags", "capabilities", "inputs_schema", "deterministic"}


class PluginRefused(MachinaError):
    exit_code = ExitCode.NOPERM


@dataclass(frozen=True)
class Plugin:
    file: str
    source: str  # exactly the bytes whose hash matched, decoded
    sha256: str
    capabilities: frozenset[str]
    spec: ToolSpec


def load_plugin(plugins_dir: str, name: str, allowed_caps: Iterable[str], pins: dict[str, str] | None = None) -> Plugin:
    """The plugin in ``plugins_dir/name``, checked; PluginRefused says why not."""
    pins = read_pins(plugins_dir) if pins is None else pins
    if name not in pins:
        raise PluginRefused(f"{name}: not pinned (pin it with `machina plugin pin {name}` after review)")
    try:
        data = read_plugin_file(plugins_dir, name)
    except PinError as exc:
        raise PluginRefused(str(exc)) from None
    if not matches(data, pins[name]):
        raise PluginRefused(f"{name}: SHA-256 does not match its pin: the file changed since it was pinned")
    return checked_plugin(name, data, pins[name], allowed_caps, plugins_dir)


def checked_plugin(name: str, data: bytes, sha256: str, allowed_caps: Iterable[str], plugins_dir: str) -> Plugin:
    """``data`` as a plugin named ``name``: its declaration read (never executed), its capabilities within
    ``allowed_caps``.  The caller has checked the bytes (a pin, or Genesis's own checks)."""
    try:
        source = data.decode("utf-8")
        declared = _declaration(source, name)
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise PluginRefused(f"{name}: cannot read the {DECLARATION} declaration: {exc}") from None
    caps = _capabilities(declared, name)
    excess = sorted(caps - set(allowed_caps))
    if excess:
        allowed = ",".join(sorted(allowed_caps)) or "(none)"
        raise PluginRefused(
            f"{name}: declares {', '.join(excess)} beyond MACHINA_PLUGIN_ALLOWED_CAPS={allowed}"
            + ("" if "capabilities" in declared else " (no capabilities declared means all of them)")
        )
    return Plugin(
        file=name, source=source, sha256=sha256, capabilities=caps, spec=_spec(declared, caps, name, plugins_dir)
    )


def load_plugins(
    plugins_dir: str, allowed_caps: Iterable[str], taken_aids: Iterable[str] = ()
) -> tuple[dict[str, Plugin], list[tuple[str, str]]]:
    """Every loadable plugin by AID, and ``(file, reason)`` for each refused one."""
    allowed = tuple(allowed_caps)
    taken = set(taken_aids)
    loaded: dict[str, Plugin] = {}
    refused: list[tuple[str, str]] = []
    if not os.path.isdir(plugins_dir):
        return loaded, refused
    try:
        pins = read_pins(plugins_dir)
    except PinError as exc:
        return loaded, [("pins.json", str(exc))]
    for name in sorted(n for n in os.listdir(plugins_dir) if n.endswith(".py")):
        try:
            plugin = load_plugin(plugins_dir, name, allowed, pins)
        except PluginRefused as exc:
            refused.append((name, str(exc)))
            continue
        aid = plugin.spec.aid
        if aid in taken or aid in loaded:
            refused.append((name, f"{name}: {aid} is already provided by another tool"))
            continue
        loaded[aid] = plugin
    return loaded, refused


def _declaration(source: str, name: str) -> dict[str, Any]:
    for node in ast.parse(source, filename=name).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == DECLARATION for t in node.targets):
            value = ast.literal_eval(node.value)
            if not isinstance(value, dict):
                raise ValueError(f"{DECLARATION} must be a dictionary literal")
            unknown = set(value) - _KEYS
            if unknown:
                raise ValueError(f"unknown keys {', '.join(sorted(map(str, unknown)))}")
            return value
    raise ValueError(f"no top-level {DECLARATION} = {{...}} assignment")


def _capabilities(declared: dict[str, Any], name: str) -> frozenset[str]:
    if "capabilities" not in declared:
        return frozenset(capabilities.ALL_CAPABILITIES)
    caps = declared["capabilities"]
    if not isinstance(caps, list | tuple) or not all(isinstance(c, str) for c in caps):
        raise PluginRefused(f"{name}: capabilities must be a list of names")
    unknown = sorted(set(caps) - set(capabilities.ALL_CAPABILITIES))
    if unknown:
        raise PluginRefused(f"{name}: unknown capabilities {', '.join(unknown)}")
    return frozenset(caps)


def _spec(declared: dict[str, Any], caps: frozenset[str], name: str, plugins_dir: str) -> ToolSpec:
    aid = declared.get("aid")
    if not isinstance(aid, str) or not re.fullmatch(AID_PATTERN, aid):
        raise PluginRefused(f"{name}: aid {aid!r} is not an AID (AID.NAME.v1)")
    tags = declared.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and re.fullmatch(TAG_PATTERN, t) for t in tags):
        raise PluginRefused(f"{name}: tags must be a list of tag.* names")
    schema = declared.get("inputs_schema", {"type": "object"})
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PluginRefused(f"{name}: inputs_schema is not a valid JSON Schema: {exc.message}") from None
    return ToolSpec(
        aid=aid,
        name=str(declared.get("name") or name[:-3]),
        tags=tuple(tags),
        side_effects=capabilities.side_effects(caps),  # the tier follows from what it may do, not what it says
        deterministic=bool(declared.get("deterministic", False)),
        inputs_schema=schema,
        description=str(declared.get("description", "")),
        pack="plugins",
        source=os.path.join(plugins_dir, name),
    )

"""The tools the toolhost can run: built-ins (manifest + implementation) and pinned plugins.

A plugin is re-verified (hash, declaration, capabilities) on every call, so replacing or unpinning its file
takes effect at once, and the bytes that run are the bytes just checked.  ``AID.MCP.*`` tools come from the
MCP bridge (machina.mcp.bridge), which answers for its servers' pins and connections the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from machina import toolapi
from machina.manifests.tools import ToolSpec
from machina.plugins import caps
from machina.plugins.loader import Plugin, PluginRefused, load_plugin, load_plugins
from machina.toolhost.runners import BUILTIN_RUNNERS, MISSING, PLUGIN, Runner

MCP_PREFIX = "AID.MCP."


class ToolUnavailable(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Resolved:
    spec: ToolSpec
    runner: Runner
    plugin: Plugin | None = None


def plugin_runner(plugin: Plugin) -> Runner:
    c = plugin.capabilities
    return Runner(
        "plugin",
        PLUGIN,
        caps.grants(c),
        network="NETWORK" in c,
        gpu="GPU" in c,
        exec_allowed="SHELL" in c,
    )


class Catalog:
    def __init__(self, manifests: dict[str, ToolSpec], plugins_dir: str, allowed_caps: tuple[str, ...]) -> None:
        self.manifests = manifests
        self.plugins_dir = plugins_dir
        self.allowed_caps = allowed_caps
        self._lock = threading.Lock()
        self._plugin_files: dict[str, str] = {}
        self.refused: list[tuple[str, str]] = []
        self.mcp: Any = None  # machina.mcp.bridge.McpBridge: resolve(aid) and resolved_tools()

    def builtin_aids(self) -> set[str]:
        """The declared tools that have an implementation (a plugin may provide any other declared one)."""
        return {aid for aid in self.manifests if aid in BUILTIN_RUNNERS}

    def implemented_aids(self) -> set[str]:
        with self._lock:
            return self.builtin_aids() | set(self._plugin_files)

    def refresh(self) -> dict[str, Plugin]:
        plugins, refused = load_plugins(self.plugins_dir, self.allowed_caps, taken_aids=self.builtin_aids())
        with self._lock:
            self._plugin_files = {aid: p.file for aid, p in plugins.items()}
            self.refused = refused
        return plugins

    def resolve(self, aid: str) -> Resolved:
        spec = self.manifests.get(aid)
        if spec is not None and aid in BUILTIN_RUNNERS:
            return Resolved(spec, BUILTIN_RUNNERS[aid])
        if self.mcp is not None and aid.startswith(MCP_PREFIX):
            return self.mcp.resolve(aid)
        with self._lock:
            file = self._plugin_files.get(aid)
        if file is None:
            self.refresh()
            with self._lock:
                file = self._plugin_files.get(aid)
        if file is None and spec is not None:
            raise ToolUnavailable(
                toolapi.UNKNOWN_TOOL,
                f"{aid} is declared by toolpack {spec.pack!r} but has no implementation (a missing tool)",
            )
        if file is None:
            raise ToolUnavailable(toolapi.UNKNOWN_TOOL, f"no tool {aid} (not built in, no pinned plugin declares it)")
        try:
            plugin = load_plugin(self.plugins_dir, file, self.allowed_caps)
        except PluginRefused as exc:
            self.refresh()
            raise ToolUnavailable(toolapi.DENIED, f"plugin refused: {exc}") from None
        if plugin.spec.aid != aid:
            self.refresh()
            raise ToolUnavailable(toolapi.UNKNOWN_TOOL, f"no tool {aid} ({file} now declares {plugin.spec.aid})")
        return Resolved(plugin.spec, plugin_runner(plugin), plugin)

    def listing(self, describe: Any) -> dict[str, Any]:
        """Every tool: the runnable ones, and declared ones without an implementation marked
        ``"implemented": false`` (``describe(resolved)`` adds the path and the permission answer)."""
        plugins = self.refresh()
        tools = []
        for aid, spec in sorted(self.manifests.items()):
            if aid in BUILTIN_RUNNERS:
                tools.append(spec.listing(**describe(Resolved(spec, BUILTIN_RUNNERS[aid]))))
            elif aid not in plugins:  # a declared tool no plugin provides either
                tools.append(spec.listing(implemented=False, **describe(Resolved(spec, Runner("", MISSING)))))
        for _aid, plugin in sorted(plugins.items()):
            resolved = Resolved(plugin.spec, plugin_runner(plugin), plugin)
            tools.append(
                plugin.spec.listing(plugin=plugin.file, capabilities=sorted(plugin.capabilities), **describe(resolved))
            )
        for resolved in self.mcp.resolved_tools() if self.mcp is not None else []:
            # The description is the server's text: labelled for whoever shows it to a model.
            server = resolved.spec.tags[-1]
            tools.append(resolved.spec.listing(mcp_server=server, untrusted_description=True, **describe(resolved)))
        return {"tools": tools, "refused": [{"file": f, "reason": r} for f, r in self.refused]}

"""Inside the sandbox: run a plugin's verified source and give it ``host``, its only way to the outside.

Every ``host`` method is a request to the toolhost, which answers only what the plugin's allowed
capabilities grant (machina.plugins.caps); the sandbox itself holds nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from machina.tools import files, memory
from machina.tools.base import ToolContext, ToolFailure


class PluginHost:
    def __init__(self, ctx: ToolContext) -> None:
        self._ctx = ctx

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        """A file under the working root (FILE_READ)."""
        limit = self._ctx.params.get("read_max_bytes", 1 << 20)
        if max_bytes is not None:
            limit = min(limit, int(max_bytes))
        handle, _ = self._ctx.open_read(path)
        with handle:
            return handle.read(limit)

    def write_file(
        self, path: str, data: bytes | str, *, overwrite: bool = False, mkdirs: bool = False
    ) -> dict[str, Any]:
        """Write a file under the working root atomically, keeping a .bak (FILE_WRITE)."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return files.write_file(self._ctx, path, payload, overwrite=overwrite, mkdirs=mkdirs)

    def memory_append(
        self, stream: str, *, text: str | None = None, record: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        inputs: dict[str, Any] = {"stream": stream}
        if text is not None:
            inputs["text"] = text
        if record is not None:
            inputs["record"] = record
        return memory.memory_append(inputs, self._ctx)

    def memory_query(self, stream: str, query: str, top_k: int = memory.DEFAULT_TOP_K) -> dict[str, Any]:
        return memory.memory_query({"stream": stream, "query": query, "top_k": top_k}, self._ctx)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self._ctx.embed(list(texts), fallback=False)[0]


def run_plugin(name: str, source: str, inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"machina_plugin_{name.removesuffix('.py')}"}
    exec(compile(source, f"plugins/{name}", "exec"), namespace)  # noqa: S102 - pinned code, in its sandbox
    run = namespace.get("run")
    if not callable(run):
        raise ToolFailure(f"plugin {name} defines no run(inputs, host) function")
    output = run(inputs, PluginHost(ctx))
    if output is None:
        output = {}
    if not isinstance(output, dict):
        raise ToolFailure(f"plugin {name} returned {type(output).__name__}, not a JSON object")
    json.dumps(output)
    return output

"""Support for the engine tests: a stand-in for machina-toolhost at the ToolClient boundary.

The toolhost is another service (as a fake LLM server stands in for an LLM API).

It answers the built-in tools the goalpacks use, the way the toolhost's protocol describes (validating
inputs against the manifests first), reading and writing under the working root.  Tests assert on the
engine's behaviour and run logs, never on what this double recorded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from machina import config
from machina.ipc.jsonlines import ServiceUnavailable
from machina.manifests.tools import builtin_toolpack, load_tools
from machina.toolapi import INVALID_INPUT, OK, TOOL_ERROR, UNKNOWN_TOOL, ToolReply

_SPECS = load_tools([builtin_toolpack()])
CHECKOUT = Path(__file__).resolve().parents[2]
EXAMPLES = CHECKOUT / "examples"
ERROR_SCAN = {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log"}}


class ToolhostDouble:
    def __init__(self, root: str) -> None:
        self.root = root
        self.fail: dict[str, tuple[str, str]] = {}  # aid -> (status, error): answer that instead of running
        self.down = False  # behave like a toolhost that is not running
        self.counter = 0  # makes AID.PROC.SELF_METRICS.v1 non-deterministic

    def call(
        self,
        aid: str,
        inputs: dict[str, Any],
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> ToolReply:
        if self.down:
            raise ServiceUnavailable(f"{self.root}/run/toolhost.sock: service not running (No such file or directory)")
        started = time.monotonic()
        spec = _SPECS.get(aid)
        if spec is None:
            return ToolReply(False, UNKNOWN_TOOL, error=f"no tool {aid}")
        errors = spec.input_errors(inputs)
        if errors:
            return ToolReply(False, INVALID_INPUT, error="; ".join(errors))
        if aid in self.fail:
            status, error = self.fail[aid]
            return ToolReply(False, status, error=error)
        try:
            output = getattr(self, "_" + aid.split(".", 1)[1].rsplit(".", 1)[0].replace(".", "_").lower())(inputs)
        except OSError as exc:
            return ToolReply(False, TOOL_ERROR, error=str(exc))
        return ToolReply(True, OK, output=output, duration_ms=(time.monotonic() - started) * 1000)

    def _path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def _noop(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _ask_sup(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"asked": inputs.get("question", "")}

    def _error_scan(self, inputs: dict[str, Any]) -> dict[str, Any]:
        pattern, max_rows = inputs.get("pattern", "ERROR"), inputs.get("max_rows", 100)
        with open(self._path(inputs["input_path"]), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        hits = [(n, line) for n, line in enumerate(lines, 1) if pattern in line]
        rows = [{"line": n, "text": text} for n, text in hits[:max_rows]]
        return {
            "path": inputs["input_path"],
            "pattern": pattern,
            "lines": len(lines),
            "matches": len(hits),
            "rows": rows,
        }

    def _report_summary(self, inputs: dict[str, Any]) -> dict[str, Any]:
        text = f"# {inputs.get('title', 'Report')}\n\n{json.dumps(inputs.get('findings'), sort_keys=True)}\n"
        if "output_path" not in inputs:
            return {"summary": text}
        path = self._path(inputs["output_path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return {"path": inputs["output_path"], "bytes": len(text.encode())}

    def _file_read(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with open(self._path(inputs["path"]), "rb") as handle:
            data = handle.read(inputs.get("max_bytes", 65536))
        return {"path": inputs["path"], "content": data.decode("utf-8", "replace"), "bytes": len(data)}

    def _file_write(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with open(self._path(inputs["path"]), "w", encoding="utf-8") as handle:
            handle.write(inputs["content"])
        return {"path": inputs["path"], "bytes": len(inputs["content"].encode())}

    def _memory_append(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with open(self._path(f"memory/{inputs['stream']}.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"text": inputs.get("text", "")}) + "\n")
        return {"stream": inputs["stream"], "appended": 1}

    def _proc_self_metrics(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        return {"calls": self.counter}


def load_cfg(root: Path, **env: str) -> config.Config:
    return config.load(environ={"MACHINA_ROOT": str(root), "MACHINA_ENV_FILE": "/dev/null", **env})


def events(log_path: str, kind: str | None = None) -> list[dict[str, Any]]:
    with open(log_path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return [r for r in records if kind is None or r["event"] == kind]


def operator_goalpack(root: Path, *goals: dict[str, Any], pack: str = "test") -> Path:
    path = root / "goalpacks" / pack / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pack": pack, "version": 1, "goals": list(goals)}))
    return path

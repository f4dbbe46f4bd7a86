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
from machina.audit.canonical import canonical
from machina.audit.chain import GENESIS, Chain
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
        self.tokens: list[tuple[str, str | None]] = []  # (aid, lease_token) of every call

    def call(
        self,
        aid: str,
        inputs: dict[str, Any],
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> ToolReply:
        if self.down:
            raise ServiceUnavailable(f"{self.root}/run/toolhost.sock: service not running (No such file or directory)")
        started = time.monotonic()
        self.tokens.append((aid, lease_token))
        spec = _SPECS.get(aid)
        if spec is None:
            return ToolReply(False, UNKNOWN_TOOL, error=f"no tool {aid}")
        errors = spec.input_errors(inputs)
        if errors:
            return ToolReply(False, INVALID_INPUT, error="; ".join(errors))
        if aid in self.fail:
            status, error = self.fail[aid]
            return ToolReply(False, status, error=error)
        if aid == "AID.QUEUE.ENQUEUE.v1":  # like the toolhost, report the capabilities the new job gets
            return ToolReply(True, OK, output={"queued": "p5000_rq_x.json", "capabilities": capabilities})
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
    """The configuration of an engine over ``root``; the policy scripts live in its policies/ (not tool-writable)."""
    scripts = str(root / "policies")
    base = {"MACHINA_ROOT": str(root), "MACHINA_ENV_FILE": "/dev/null", "MACHINA_POLICY_ALLOWED_SCRIPT_ROOT": scripts}
    return config.load(environ={**base, **env})


def events(log_path: str, kind: str | None = None) -> list[dict[str, Any]]:
    with open(log_path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    return [r for r in records if kind is None or r["event"] == kind]


def operator_goalpack(root: Path, *goals: dict[str, Any], pack: str = "test") -> Path:
    path = root / "goalpacks" / pack / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pack": pack, "version": 1, "goals": list(goals)}))
    return path


# --- ways to tamper with a run log (of goal.ERROR_SCAN.v1), and the problem each must cause --------------


def _tamper_field(path: Path) -> None:
    raw = path.read_bytes().splitlines(keepends=True)
    record = json.loads(raw[3])  # the scan's tool event
    record["diff"][0]["value"]["matches"] = 0
    raw[3] = canonical(record) + b"\n"
    path.write_bytes(b"".join(raw))


def _delete_line(path: Path) -> None:
    raw = path.read_bytes().splitlines(keepends=True)
    del raw[4]
    path.write_bytes(b"".join(raw))


def _reorder(path: Path) -> None:
    raw = path.read_bytes().splitlines(keepends=True)
    raw[2], raw[4] = raw[4], raw[2]
    path.write_bytes(b"".join(raw))


def _reorder_and_renumber(path: Path) -> None:
    raw = [json.loads(line) for line in path.read_bytes().splitlines(keepends=True)]
    raw[2], raw[4] = raw[4], raw[2]
    raw[2]["seq"], raw[4]["seq"] = 2, 4
    path.write_bytes(b"".join(canonical(r) + b"\n" for r in raw))


def _respell(path: Path) -> None:
    raw = path.read_bytes().splitlines(keepends=True)
    raw[1] = json.dumps(json.loads(raw[1]), sort_keys=True).encode() + b"\n"  # same content, spaces added
    path.write_bytes(b"".join(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def _drop_tail(path: Path) -> None:
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))


def _garbage(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"not json\n")


TAMPERS = {
    "changed field": (_tamper_field, "chain hash mismatch"),
    "deleted line": (_delete_line, "seq 5, expected 4"),
    "reordered lines": (_reorder, "seq 4, expected 2"),
    "reordered and renumbered": (_reorder_and_renumber, "chain hash mismatch"),
    "respelled line": (_respell, "not in canonical form"),
    "torn last line": (_truncate, "torn last line"),
    "dropped done": (_drop_tail, "incomplete: no done event"),
    "appended garbage": (_garbage, "not JSON"),
}


def rewrite_chain(path: Path, records: list[dict], key: str | None = None) -> None:
    """Re-seal records with a fresh chain: what someone who can rewrite the file could do."""
    chain, prev, out = Chain(key), GENESIS, []
    for seq, record in enumerate(records):
        body = {k: v for k, v in record.items() if k not in ("chain_hash", "chain_prev")}
        body["seq"] = seq
        sealed = chain.seal(prev, body)
        prev = sealed["chain_hash"]
        out.append(canonical(sealed) + b"\n")
    path.write_bytes(b"".join(out))

"""AID.REPORT_SUMMARY.v1: write a Markdown summary of a run's findings to a file under the root.

The report replaces an earlier one at the same path (the old one stays as ``<name>.bak``); the directory
is created when missing.  Default path: ``reports/<run_id>.md`` (``reports/summary.md`` without a run).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import orjson

from machina.audit.canonical import json_bytes
from machina.tools.base import ToolContext
from machina.tools.files import write_file

_KNOWN = ("output_path", "title", "findings")


def report_summary(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    run_id = ctx.params.get("run_id") or ""
    path = inputs.get("output_path") or f"reports/{_safe_name(run_id) or 'summary'}.md"
    text = render(inputs, run_id)
    data = text.encode("utf-8")
    committed = write_file(ctx, path, data, overwrite=True, mkdirs=True)
    return {"output_path": path, "bytes": len(data), **committed}


def render(inputs: dict[str, Any], run_id: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"# {inputs.get('title') or 'Summary'}",
        "",
        f"Generated {stamp}" + (f" for run {run_id}" if run_id else ""),
    ]
    sections = [("Findings", inputs["findings"])] if "findings" in inputs else []
    sections += [(key.replace("_", " ").capitalize(), value) for key, value in inputs.items() if key not in _KNOWN]
    for heading, value in sections:
        lines += ["", f"## {heading}", "", _block(value)]
    return "\n".join(lines) + "\n"


def _block(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return "\n".join(f"- {v}" for v in value) or "(none)"
    return "```json\n" + _indented(value) + "\n```"


#: json indents in pure Python (its C encoder is for compact output only): 30-40 us for an ERROR_SCAN's three
#: findings, which orjson writes, byte for byte the same, in 2 (``json_bytes``: json where they could differ).
_INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
_INDENTED |= orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_JSON_INDENTED = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False)


def _indented(value: Any) -> str:
    return json_bytes(value, _INDENTED, _JSON_INDENTED.encode).decode()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:100].lstrip(".")

"""AID.ERROR_SCAN.v1: count the lines of a log under the root that match a pattern (a regular expression).

The pattern comes from the caller, so it runs here, inside the sandbox, under the CPU limit: a
catastrophic regular expression costs its own executor, not the toolhost.
"""

from __future__ import annotations

import re
from typing import Any

from machina.tools.base import ToolContext, ToolFailure

DEFAULT_PATTERN = "ERROR"
DEFAULT_MAX_ROWS = 100
MAX_LINE_CHARS = 1000  # each returned row is cut to this many characters


def error_scan(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pattern_text = inputs.get("pattern", DEFAULT_PATTERN)
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ToolFailure(f"pattern {pattern_text!r} is not a valid regular expression: {exc}") from None
    max_rows = inputs.get("max_rows", DEFAULT_MAX_ROWS)
    handle, _ = ctx.open_read(inputs["input_path"])
    matches, lines = 0, 0
    rows: list[dict[str, Any]] = []
    with handle:
        for lines, raw in enumerate(handle, 1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if pattern.search(text):
                matches += 1
                if len(rows) < max_rows:
                    rows.append({"line": lines, "text": text[:MAX_LINE_CHARS]})
    return {
        "input_path": inputs["input_path"],
        "pattern": pattern_text,
        "matches": matches,
        "lines": lines,
        "rows": rows,
        "truncated": matches > len(rows),
    }

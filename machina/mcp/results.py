"""An MCP tool result as a tool output, cut to MACHINA_MCP_RESULT_MAX_BYTES.

Output: ``{"server", "tool", "content": [...], "structured": {...} (when it fits), "truncated": bool,
"result_bytes": N}``.  Content items keep the MCP shape (``{"type": "text", "text": ...}``, images and
resources as the server sent them); text is cut at the budget, an item that does not fit at all is replaced
by ``{"type": ..., "omitted_bytes": N}``.  Everything here is the server's text: untrusted, shown, never obeyed.
"""

from __future__ import annotations

import json
from typing import Any

TEXT_KEYS = ("text",)


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode())


def _cut(text: str, max_bytes: int) -> str:
    return text.encode()[: max(0, max_bytes)].decode(errors="ignore")


def capped_output(
    server: str, tool: str, content: list[dict[str, Any]], structured: Any, max_bytes: int
) -> dict[str, Any]:
    budget = max_bytes
    kept: list[dict[str, Any]] = []
    total = 0
    truncated = False
    for item in content:
        size = _size(item)
        total += size
        if size <= budget:
            kept.append(item)
            budget -= size
            continue
        truncated = True
        if isinstance(item.get("text"), str) and budget > 64:
            text = _cut(item["text"], budget - 64)
            kept.append({**item, "text": text})
            budget -= _size(kept[-1])
        else:
            kept.append({"type": str(item.get("type", "unknown")), "omitted_bytes": size})
    output: dict[str, Any] = {"server": server, "tool": tool, "content": kept}
    if structured is not None:
        size = _size(structured)
        total += size
        if size <= budget:
            output["structured"] = structured
        else:
            truncated = True
            output["structured_omitted_bytes"] = size
    output["truncated"] = truncated
    output["result_bytes"] = total
    return output


def error_text(content: list[dict[str, Any]], max_bytes: int = 2000) -> str:
    """The text of an error result, short: it goes into the reply's error and the caller's log."""
    texts = [str(item.get("text", "")) for item in content if item.get("type") == "text"]
    return _cut(" ".join(texts).strip() or "the tool reported an error without text", max_bytes)

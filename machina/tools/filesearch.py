"""AID.FILE.LIST.v1 and AID.FILE.SEARCH.v1: what is under a directory of the working root, and where a
pattern occurs in those files.

Both ask the toolhost (grant ``fs_read``): the listing comes back as data from the toolhost's confined
walk (links listed, never followed; the suite's own directories left out), and each file searched is
opened by the toolhost like AID.FILE.READ.v1, read up to MACHINA_FILE_READ_MAX_BYTES.  Files that look
binary (a NUL byte in their first 8 KiB) are skipped.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from machina.tools.base import ToolContext, ToolFailure, cap

DEFAULT_LIST_ENTRIES = 1000
MAX_LIST_ENTRIES = 10_000
DEFAULT_MATCHES = 100
MAX_LINE_CHARS = 500
SEARCH_DEPTH = 8
MAX_FILES_SEARCHED = 2000
BINARY_PROBE = 8192


def file_list(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path = inputs.get("path", ".")
    limit = min(inputs.get("max_entries", DEFAULT_LIST_ENTRIES), MAX_LIST_ENTRIES)
    result, _ = ctx.host("list_dir", path=path, depth=inputs.get("depth", 1), limit=limit)
    entries = result["entries"]
    if inputs.get("glob"):
        entries = [e for e in entries if fnmatch.fnmatchcase(e["path"].rsplit("/", 1)[-1], inputs["glob"])]
    return {"path": path, "entries": entries, "count": len(entries), "truncated": result["truncated"]}


def compile_pattern(inputs: dict[str, Any]) -> re.Pattern[str]:
    text = inputs["pattern"]
    if inputs.get("literal"):
        text = re.escape(text)
    try:
        return re.compile(text, re.IGNORECASE if inputs.get("ignore_case") else 0)
    except re.error as exc:
        raise ToolFailure(f"pattern {inputs['pattern']!r} is not a valid regular expression: {exc}") from None


def file_search(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    pattern = compile_pattern(inputs)
    limit = inputs.get("max_matches", DEFAULT_MATCHES)
    read_max = cap(None, ctx.params["read_max_bytes"])
    files, listing_cut = _files_to_search(inputs, ctx)
    matches: list[dict[str, Any]] = []
    skipped: list[str] = []
    searched = 0
    truncated = listing_cut
    for path in files:
        text, cut = _read_text(ctx, path, read_max)
        if text is None:
            skipped.append(path)
            continue
        searched += 1
        truncated = truncated or cut
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                if len(matches) >= limit:
                    return _found(inputs, matches, searched, skipped, truncated=True)
                matches.append({"path": path, "line": number, "text": line[:MAX_LINE_CHARS]})
    return _found(inputs, matches, searched, skipped, truncated=truncated)


def _files_to_search(inputs: dict[str, Any], ctx: ToolContext) -> tuple[list[str], bool]:
    path = inputs.get("path", ".")
    try:
        result, _ = ctx.host("list_dir", path=path, depth=inputs.get("depth", SEARCH_DEPTH), limit=MAX_LIST_ENTRIES)
    except ToolFailure as exc:
        if "is not a directory" not in str(exc):
            raise
        return [path], False  # a single file
    files = [e["path"] for e in result["entries"] if e["type"] == "file"]
    if inputs.get("glob"):
        files = [f for f in files if fnmatch.fnmatchcase(f.rsplit("/", 1)[-1], inputs["glob"])]
    return files[:MAX_FILES_SEARCHED], bool(result["truncated"]) or len(files) > MAX_FILES_SEARCHED


def _read_text(ctx: ToolContext, path: str, limit: int) -> tuple[str | None, bool]:
    try:
        handle, _ = ctx.open_read(path)
    except ToolFailure:
        return None, False  # vanished, a link, unreadable: reported as skipped
    with handle:
        data = handle.read(limit + 1)
    if b"\x00" in data[:BINARY_PROBE]:
        return None, False
    return data[:limit].decode("utf-8", errors="replace"), len(data) > limit


def _found(
    inputs: dict[str, Any], matches: list[dict[str, Any]], searched: int, skipped: list[str], *, truncated: bool
) -> dict[str, Any]:
    return {
        "pattern": inputs["pattern"],
        "matches": matches,
        "count": len(matches),
        "files_searched": searched,
        "skipped": skipped[:100],
        "truncated": truncated,
    }

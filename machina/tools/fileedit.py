"""AID.FILE.DIFF.v1, AID.FILE.EDIT.v1, AID.FILE.APPEND.v1 and AID.FILE.DELETE.v1: files under the working
root changed only through the toolhost, confined like AID.FILE.READ.v1 / AID.FILE.WRITE.v1.

* DIFF compares a file with another file or with a proposed content (a unified diff; nothing is written).
* EDIT replaces an exact text (once, or everywhere with ``replace_all``) and writes the file back the way
  FILE.WRITE does: a temporary file renamed into place, the old content kept as ``<name>.bak``.  A text
  that is missing, or found several times without ``replace_all``, changes nothing.
* APPEND adds text at the end through an append-only descriptor, under an exclusive ``flock``.
* DELETE moves the file to ``state/trash/`` (out of every tool's reach; the operator can restore it).

A file larger than MACHINA_FILE_READ_MAX_BYTES is not edited or diffed: half a file would be lost.
"""

from __future__ import annotations

import difflib
import fcntl
import os
from typing import Any

from machina.tools.base import ToolContext, ToolFailure
from machina.tools.files import write_file

MAX_DIFF_CHARS = 256 * 1024


def read_whole(ctx: ToolContext, path: str) -> str:
    limit = ctx.params["read_max_bytes"]
    handle, info = ctx.open_read(path)
    with handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ToolFailure(f"{path} is {info['size']} bytes, over MACHINA_FILE_READ_MAX_BYTES={limit}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise ToolFailure(f"{path} is not text (binary, or not UTF-8)")
    return text


def unified(before: str, after: str, old_name: str, new_name: str, context: int) -> tuple[str, int, int]:
    lines = list(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), old_name, new_name, n=context
        )
    )
    added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return text, added, removed


def file_diff(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if ("other_path" in inputs) == ("content" in inputs):
        raise ToolFailure("give other_path (a file to compare with) or content (a proposed text), not both")
    before = read_whole(ctx, inputs["path"])
    if "other_path" in inputs:
        after, new_name = read_whole(ctx, inputs["other_path"]), inputs["other_path"]
    else:
        after, new_name = inputs["content"], inputs["path"] + " (proposed)"
    text, added, removed = unified(before, after, inputs["path"], new_name, inputs.get("context", 3))
    return {
        "path": inputs["path"],
        "changed": before != after,
        "added": added,
        "removed": removed,
        "diff": text[:MAX_DIFF_CHARS],
        "truncated": len(text) > MAX_DIFF_CHARS,
    }


def file_edit(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    path, old, new = inputs["path"], inputs["old_string"], inputs["new_string"]
    if old == new:
        raise ToolFailure("old_string and new_string are the same: nothing to change")
    before = read_whole(ctx, path)
    found = before.count(old)
    if found == 0:
        raise ToolFailure(f"old_string was not found in {path}; nothing was changed")
    if found > 1 and not inputs.get("replace_all"):
        raise ToolFailure(
            f"old_string occurs {found} times in {path}; give more context or set replace_all (nothing was changed)"
        )
    after = before.replace(old, new) if inputs.get("replace_all") else before.replace(old, new, 1)
    committed = write_file(ctx, path, after.encode("utf-8"), overwrite=True, mkdirs=False)
    text, added, removed = unified(before, after, path, path, 3)
    return {
        "path": path,
        "replacements": found if inputs.get("replace_all") else 1,
        "backup": committed.get("backup"),
        "added": added,
        "removed": removed,
        "diff": text[:MAX_DIFF_CHARS],
    }


def file_append(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    data = inputs["content"].encode("utf-8")
    _, fds = ctx.host("open_append", path=inputs["path"], create=bool(inputs.get("create", False)))
    with os.fdopen(fds[0], "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            offset = os.lseek(handle.fileno(), 0, os.SEEK_END)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return {"path": inputs["path"], "bytes": len(data), "offset": offset, "size": offset + len(data)}


def file_delete(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    result, _ = ctx.host("delete", path=inputs["path"])
    return {"path": inputs["path"], "kept_as": result["kept_as"]}

"""AID.FILE.READ.v1 and AID.FILE.WRITE.v1: files under the working root, reached only through the toolhost.

The toolhost resolves the path (component by component, no symlinks, no ``..``, never inside the suite's
own directories) and hands over an open descriptor; a write goes to a temporary file beside the target,
is fsynced here, and the toolhost renames it into place keeping the old content as ``<name>.bak``.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from machina.tools.base import INLINE_WRITE_MAX, ToolContext, cap


def file_read(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    limit = cap(inputs.get("max_bytes"), ctx.params["read_max_bytes"])
    handle, info = ctx.open_read(inputs["path"])
    with handle:
        data = handle.read(limit + 1)
    truncated = len(data) > limit
    data = data[:limit]
    content, encoding = decode(data, truncated)
    return {
        "path": inputs["path"],
        "content": content,
        "encoding": encoding,
        "bytes": len(data),
        "size": info["size"],
        "truncated": truncated,
    }


def decode(data: bytes, truncated: bool) -> tuple[str, str]:
    """UTF-8 text when it is text (a character cut by truncation is dropped), else base64."""
    for cut in range(4 if truncated else 1):
        try:
            return data[: len(data) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(data).decode("ascii"), "base64"


def file_write(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    data = inputs["content"].encode("utf-8")
    overwrite, mkdirs = bool(inputs.get("overwrite", False)), bool(inputs.get("mkdirs", False))
    committed = write_file(ctx, inputs["path"], data, overwrite=overwrite, mkdirs=mkdirs)
    return {"path": inputs["path"], "bytes": len(data), **committed}


def write_file(ctx: ToolContext, path: str, data: bytes, *, overwrite: bool, mkdirs: bool) -> dict[str, Any]:
    """Write ``data`` to a temporary file the toolhost made beside ``path``, fsync it, have it renamed in.

    Up to INLINE_WRITE_MAX bytes the toolhost does all three on one request; more is written here, through
    the descriptor of the temporary file (under this process's RLIMIT_FSIZE)."""
    if len(data) <= INLINE_WRITE_MAX:
        return ctx.write_file(path, data, overwrite=overwrite, mkdirs=mkdirs)
    handle, token = ctx.create_file(path, overwrite=overwrite, mkdirs=mkdirs)
    with handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return ctx.commit(token)

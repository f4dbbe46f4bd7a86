"""What a built-in tool (or a plugin) sees while it runs inside a sandboxed executor.

A tool is a function ``tool(inputs: dict, ctx: ToolContext) -> dict`` whose inputs were already checked
against its manifest's ``inputs_schema``.  It has no ambient access to ``MACHINA_ROOT``: it asks the
toolhost through ``ctx`` for what its grant allows (an open file descriptor, an atomic commit, an
embedding, an enqueue) and the toolhost decides.  A failure it should report is a :class:`ToolFailure`.
"""

from __future__ import annotations

import os
from typing import IO, Any, Protocol

from machina import toolapi

#: the most a tool hands the toolhost to write in one request (``write_file``) instead of writing it through
#: a descriptor: a quarter of the smallest RLIMIT_FSIZE a tool can have (1 MiB), so no limit is bypassed
INLINE_WRITE_MAX = 256 * 1024


class ToolFailure(Exception):
    """The tool ran and failed in a way the caller should see (bad pattern, no such file, refused URL)."""

    def __init__(self, message: str, *, status: str = toolapi.TOOL_ERROR, output: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.output = output or {}


class ToolContext(Protocol):
    params: dict[str, Any]  # configured limits for this tool, the run_id and request_id of the call

    def host(self, op: str, **args: Any) -> tuple[dict[str, Any], list[int]]:
        """Ask the toolhost for something; raises ToolFailure when it refuses."""

    def open_read(self, path: str) -> tuple[IO[bytes], dict[str, Any]]:
        """A file under the root, opened for reading by the toolhost (no symlinks, no reserved dirs)."""

    def create_file(self, path: str, *, overwrite: bool, mkdirs: bool) -> tuple[IO[bytes], str]:
        """A new temporary file beside ``path``; write it, then ``commit(handle)`` renames it into place."""

    def commit(self, handle: str) -> dict[str, Any]: ...

    def write_file(self, path: str, data: bytes, *, overwrite: bool, mkdirs: bool) -> dict[str, Any]:
        """``data`` (at most INLINE_WRITE_MAX bytes) written, fsynced and renamed into place by the toolhost in
        one request: what ``create_file``, a write and ``commit`` do, one round trip instead of two."""

    def open_stream(self, stream: str, mode: str) -> IO[bytes] | None:
        """A memory stream for ``read`` (None when it does not exist yet) or ``append``."""

    def embed(self, texts: list[str], *, fallback: bool) -> tuple[list[list[float]], str]: ...


def adopt(fd: int, mode: str) -> IO[bytes]:
    """Wrap a descriptor received from the toolhost."""
    return os.fdopen(fd, mode)


def cap(requested: int | None, configured: int) -> int:
    """A caller-supplied limit can only lower the configured one."""
    return configured if requested is None else min(int(requested), configured)

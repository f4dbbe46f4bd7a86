"""Log size management (OPERATIONS.md): per-file and total caps on the generated JSONL streams.

A stream over the per-file cap, or the largest streams while the total is over its cap, is halved: the
older half is appended to ``memory/archive/YYYYMMDD/<name>.older`` and the newer half kept, cut at a
line boundary.  Both halves are copied by streaming in blocks (never read whole: the earlier system's
caps read multi-GB files into memory), the archive is durable before the stream is replaced, and the
stream is replaced atomically under its lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from machina.clock import Clock
from machina.fsutil import ensure_dir, fsync_dir
from machina.memory.streams import archive_path, locked, stream_names, stream_path

BLOCK = 1 << 20


@dataclass(frozen=True)
class Halving:
    path: str
    size_before: int
    size_after: int
    archived_to: str


def _line_boundary_after(handle_fd: int, middle: int, size: int) -> int:
    """The offset just after the first newline at or after ``middle`` (``size`` when there is none)."""
    offset = middle
    while offset < size:
        chunk = os.pread(handle_fd, min(BLOCK, size - offset), offset)
        cut = chunk.find(b"\n")
        if cut >= 0:
            return offset + cut + 1
        offset += len(chunk)
    return size


def _copy_range(src_fd: int, dst: int, start: int, end: int) -> None:
    offset = start
    while offset < end:
        chunk = os.pread(src_fd, min(BLOCK, end - offset), offset)
        if not chunk:
            break
        os.write(dst, chunk)
        offset += len(chunk)


def halve(path: str, clock: Clock) -> Halving:
    memory_dir, name = os.path.split(path)
    day = time.strftime("%Y%m%d", time.gmtime(clock.time()))
    target = archive_path(memory_dir, name + ".older", day)
    fresh = path + ".halve.tmp"
    with locked(path) as fd:
        size = os.fstat(fd).st_size
        cut = _line_boundary_after(fd, size // 2, size)
        mode = os.fstat(fd).st_mode & 0o777
        ensure_dir(os.path.dirname(target))
        try:
            for dest, start, end in ((target, 0, cut), (fresh, cut, size)):
                out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                try:
                    _copy_range(fd, out, start, end)
                    os.fsync(out)
                finally:
                    os.close(out)
            fsync_dir(os.path.dirname(target))
            os.replace(fresh, path)
            fsync_dir(memory_dir)
        except BaseException:
            for leftover in (fresh, target):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            raise
    return Halving(path, size, size - cut, target)


def enforce_caps(memory_dir: str, file_cap: int, total_cap: int, clock: Clock) -> list[Halving]:
    """Halve every stream over ``file_cap``, then the largest ones while all together exceed ``total_cap``."""
    done = []
    sizes = {s: os.path.getsize(stream_path(memory_dir, s)) for s in stream_names(memory_dir)}
    for stream, size in sorted(sizes.items()):
        if size > file_cap:
            done.append(halve(stream_path(memory_dir, stream), clock))
            sizes[stream] = done[-1].size_after
    while sum(sizes.values()) > total_cap:
        stream = max(sizes, key=lambda s: sizes[s])
        if sizes[stream] == 0:
            break
        result = halve(stream_path(memory_dir, stream), clock)
        if result.size_after == sizes[stream]:
            break  # one line larger than half: nothing more can be cut
        done.append(result)
        sizes[stream] = result.size_after
    return done

"""Memory stream names, the line format, locked durable appends and reading lines back.

A stream is ``memory/<name>.jsonl``, one JSON object per line::

    {"ts": 1764000000.123, "request_id": "...", "run_id": "...", "text": "...", "record": {...}}

Every writer (this module and the toolhost's ``AID.MEMORY.APPEND.v1``) holds an exclusive ``flock`` on the
file while it writes one whole line with a single ``write`` on an ``O_APPEND`` descriptor, so two writers
never interleave or lose each other's lines.  A writer that died mid-line leaves a torn tail; the next
append starts on a fresh line, so the torn fragment stays one bad line (``reindex --verify`` reports it)
instead of corrupting the new record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir
from machina.memory.schemas import TYPED_STREAMS, record_problem

NAME_PATTERN = re.compile(r"[a-z0-9_]{1,32}")
MAX_LINE_BYTES = 1024 * 1024
ARCHIVE_DIR = "archive"


class StreamError(MachinaError):
    exit_code = ExitCode.DATAERR


def check_name(stream: str) -> str:
    if not isinstance(stream, str) or not NAME_PATTERN.fullmatch(stream):
        raise StreamError(f"{stream!r} is not a memory stream name (a-z, 0-9 and _, 1 to 32 characters)")
    return stream


def is_typed(stream: str) -> bool:
    """Typed streams are written by the agent components only, never by a job's MEMORY.APPEND."""
    return stream in TYPED_STREAMS


def stream_path(memory_dir: str, stream: str) -> str:
    return os.path.join(memory_dir, check_name(stream) + ".jsonl")


def stream_names(memory_dir: str) -> list[str]:
    """The streams that exist, by name (files that do not follow the naming rule are not streams)."""
    try:
        names = os.listdir(memory_dir)
    except FileNotFoundError:
        return []
    found = []
    for entry in names:
        stem, dot, ext = entry.rpartition(".")
        if dot and ext == "jsonl" and NAME_PATTERN.fullmatch(stem) and os.path.isfile(os.path.join(memory_dir, entry)):
            found.append(stem)
    return sorted(found)


def encode_line(
    record: dict[str, Any] | None,
    *,
    ts: float,
    text: str | None = None,
    request_id: str | None = None,
    run_id: str | None = None,
) -> bytes:
    entry: dict[str, Any] = {"ts": round(ts, 3)}
    for key, value in (("run_id", run_id), ("request_id", request_id), ("text", text), ("record", record)):
        if value is not None:
            entry[key] = value
    line = (
        json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
    ).encode()
    if len(line) > MAX_LINE_BYTES:
        raise StreamError(f"a memory line holds at most {MAX_LINE_BYTES} bytes; this one has {len(line)}")
    return line


def append(
    memory_dir: str,
    stream: str,
    record: dict[str, Any] | None = None,
    *,
    text: str | None = None,
    request_id: str | None = None,
    run_id: str | None = None,
    fsync: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Append one line; returns the offset it starts at.  A typed stream's record must fit its schema."""
    if record is None and text is None:
        raise StreamError("a memory line needs a record or a text")
    if is_typed(stream):
        problem = record_problem(stream, record)
        if problem:
            raise StreamError(f"memory/{stream}: {problem}")
    line = encode_line(record, ts=clock.time(), text=text, request_id=request_id, run_id=run_id)
    ensure_dir(memory_dir)
    fd = _open_locked(stream_path(memory_dir, stream))
    try:
        offset = os.lseek(fd, 0, os.SEEK_END)
        if offset and os.pread(fd, 1, offset - 1) != b"\n":
            line = b"\n" + line  # a torn line before us stays one bad line of its own
            offset += 1
        _write_all(fd, line)
        if fsync:
            os.fsync(fd)
        return offset
    finally:
        os.close(fd)  # closing releases the lock


def _open_locked(path: str) -> int:
    """The stream, opened for appending and locked; reopened when a rewrite replaced the file meanwhile.

    Rotation and pruning replace a stream under its lock; a writer that opened the old file and waited
    for the lock would otherwise append to a file no longer linked anywhere, and the line would be lost.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC  # read: the torn-tail check
    while True:
        fd = os.open(path, flags, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_ino, current.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
            return fd
        os.close(fd)


@contextlib.contextmanager
def locked(path: str) -> Iterator[int]:
    """Exclusive flock on the stream while it is read and rewritten (writers of memory streams take it too).

    Read-only is enough for the lock and the read (rewrites replace the file), so a read-only check such as
    ``reindex --verify`` also runs where the root is mounted read-only (machina-guardrails.service).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def archive_path(memory_dir: str, name: str, day: str) -> str:
    """memory/archive/YYYYMMDD/<name>, with .1, .2 ... when the day already has one."""
    base = os.path.join(memory_dir, ARCHIVE_DIR, day, name)
    candidate, n = base, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass(frozen=True)
class Line:
    number: int  # 1-based
    offset: int
    raw: bytes
    entry: dict[str, Any] | None  # None when the line is bad
    problem: str | None


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A line's entry, or why it is not one (the JSON level only; schemas are the caller's)."""
    if not raw.endswith(b"\n"):
        return None, "torn last line (no newline): an interrupted write"
    try:
        value = json.loads(raw)
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


def read_lines(path: str, start: int = 0) -> Iterator[Line]:
    """Every non-blank line from byte ``start`` (a line boundary) on, streamed: no whole-file read.

    Line numbers count from ``start``: they are the file's own only when reading from the beginning.
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                entry, problem = parse_line(raw)
                yield Line(number, offset, raw, entry, problem)
            offset += len(raw)


def entry_text(entry: dict[str, Any]) -> str:
    """The searchable text of an entry: its text, else its record as JSON."""
    if isinstance(entry.get("text"), str):
        return str(entry["text"])
    return json.dumps(entry.get("record", entry), sort_keys=True, ensure_ascii=False)

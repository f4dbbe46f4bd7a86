"""Memory streams (``MACHINA_ROOT/memory/<stream>.jsonl``): rotation and integrity.

``work_memory_maintenance`` archives a large stream under ``memory/archive/YYYYMMDD/`` and keeps only its
last lines; ``reindex --verify`` checks that every line is a JSON object.  Both change nothing without
``--apply``.  A stream is held under an exclusive ``flock`` while it is rewritten, and every rewrite is an
atomic replace (temporary file, fsync, rename), so a crash leaves either the old file or the new one and
the archive copy is durable before the stream is cut.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import click

from machina.cli.common import bootstrap, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, fsync_dir, write_atomic
from machina.ops.paths import configured_root

MIB = 1024 * 1024
ARCHIVE = "archive"


def streams(memory_dir: str) -> list[str]:
    """The ``*.jsonl`` streams directly in memory/ (the archive is not a stream)."""
    if not os.path.isdir(memory_dir):
        return []
    return sorted(
        os.path.join(memory_dir, n)
        for n in os.listdir(memory_dir)
        if n.endswith(".jsonl") and os.path.isfile(os.path.join(memory_dir, n))
    )


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
    base = os.path.join(memory_dir, ARCHIVE, day, name)
    candidate, n = base, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_durably(path: str, data: bytes, mode: int) -> None:
    try:
        write_atomic(path, data, fsync=True, mode=mode)
    except OSError as exc:
        raise MachinaError(f"{path}: cannot write: {exc.strerror}", ExitCode.CANTCREAT) from None


# --- work_memory_maintenance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    path: str
    size: int
    lines: int
    kept: int
    archived_to: str


def rotate(path: str, keep_lines: int, day: str, apply: bool) -> Rotation:
    memory_dir, name = os.path.split(path)
    with locked(path) as fd:
        data = _read_all(fd)
        lines = data.splitlines(keepends=True)
        tail = b"".join(lines[-keep_lines:]) if keep_lines else b""
        target = archive_path(memory_dir, name, day)
        if apply:
            mode = os.fstat(fd).st_mode & 0o777
            ensure_dir(os.path.dirname(target))
            _write_durably(target, data, mode)  # the whole stream is safe in the archive first
            fsync_dir(os.path.dirname(os.path.dirname(target)))
            _write_durably(path, tail, mode)  # then the stream is cut to its tail, atomically
    return Rotation(path, len(data), len(lines), min(keep_lines, len(lines)), target)


@click.command()
@click.option("--apply", is_flag=True, help="Archive and truncate (without it: only show what would happen).")
@click.option("--keep-lines", type=click.IntRange(min=0), default=5000, show_default=True, help="Lines kept.")
@click.option(
    "--min-size-mb", type=click.FloatRange(min=0), default=32, show_default=True, help="Only streams this large."
)
@root_option
def work_memory_maintenance(apply: bool, keep_lines: int, min_size_mb: float, root: str | None) -> int:
    """Rotate large memory streams: archive each under memory/archive/YYYYMMDD/, then keep its tail.

    Dry-run by default: prints what it would do.  With --apply the full stream is first written durably
    to the archive, then replaced atomically by its last --keep-lines lines.  Exit status: 0 done (or
    nothing to do), 73 a file could not be written, 78 MACHINA_ROOT missing.
    """
    cfg = bootstrap("work_memory_maintenance", {"MACHINA_ROOT": os.path.abspath(root)} if root else None)
    cfg.require_root()
    machina_root = configured_root(cfg)
    assert machina_root is not None
    day = time.strftime("%Y%m%d", time.gmtime())
    threshold = int(min_size_mb * MIB)
    verb = "archived" if apply else "would archive"
    done = 0
    for path in streams(machina_root.memory):
        size = os.path.getsize(path)
        if size < threshold:
            continue
        r = rotate(path, keep_lines, day, apply)
        done += 1
        click.echo(
            f"{verb} {r.path} ({r.size / MIB:.1f} MiB, {r.lines} lines) to {r.archived_to}; "
            f"{'kept' if apply else 'would keep'} the last {r.kept} lines"
        )
    if not done:
        click.echo(f"no memory stream of {min_size_mb:g} MiB or more in {machina_root.memory}")
    elif not apply:
        click.echo("dry run: nothing changed (use --apply)", err=True)
    return ExitCode.OK


# --- reindex --verify ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}"


def verify_stream(data: bytes, path: str) -> tuple[list[bytes], list[tuple[int, bytes, str]]]:
    """Split a stream into good lines and (number, raw line, why) for bad ones."""
    good, bad = [], []
    lines = data.splitlines(keepends=True)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if not raw.endswith(b"\n"):
            bad.append((number, raw, "torn last line (no newline): an interrupted write"))
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad.append((number, raw, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        except UnicodeDecodeError:
            bad.append((number, raw, "not UTF-8"))
            continue
        if not isinstance(value, dict):
            bad.append((number, raw, f"a JSON {type(value).__name__}, not an object"))
            continue
        good.append(raw)
    return good, bad


@click.command()
@click.option("--verify", "verify_only", is_flag=True, help="Only check (the default; kept for the manual's spelling).")
@click.option("--apply", is_flag=True, help="Move bad lines to memory/archive/YYYYMMDD/<stream>.rejected.")
@root_option
def reindex(verify_only: bool, apply: bool, root: str | None) -> int:
    """Check the integrity of the JSONL memory streams: every line a JSON object, no torn last line.

    Read-only unless --apply, which moves each bad line (verbatim) to
    memory/archive/YYYYMMDD/<stream>.rejected and rewrites the stream atomically without it.
    Exit status: 0 all streams intact (or repaired with --apply), 1 bad lines found, 73 cannot write.
    """
    if verify_only and apply:
        raise click.UsageError("--verify and --apply exclude each other")
    cfg = bootstrap("reindex", {"MACHINA_ROOT": os.path.abspath(root)} if root else None)
    cfg.require_root()
    machina_root = configured_root(cfg)
    assert machina_root is not None
    day = time.strftime("%Y%m%d", time.gmtime())
    total_bad = checked = 0
    for path in streams(machina_root.memory):
        with locked(path) as fd:
            good, bad = verify_stream(_read_all(fd), path)
            checked += 1
            for number, _, why in bad:
                click.echo(str(BadLine(path, number, why)))
            total_bad += len(bad)
            if apply and bad:
                mode = os.fstat(fd).st_mode & 0o777
                target = archive_path(machina_root.memory, os.path.basename(path) + ".rejected", day)
                ensure_dir(os.path.dirname(target))
                _write_durably(target, b"".join(raw if raw.endswith(b"\n") else raw + b"\n" for _, raw, _ in bad), mode)
                _write_durably(path, b"".join(good), mode)
                click.echo(f"moved {len(bad)} bad line(s) of {path} to {target}")
    click.echo(f"{checked} stream(s) checked, {total_bad} bad line(s)", err=True)
    if total_bad and not apply:
        return ExitCode.FAILURE
    return ExitCode.OK

"""Memory streams (``MACHINA_ROOT/memory/<stream>.jsonl``): rotation and integrity.

``work_memory_maintenance`` archives a large stream under ``memory/archive/YYYYMMDD/`` and keeps only its
last lines; ``reindex --verify`` checks that every line is a JSON object.  Both change nothing without
``--apply``.  A stream is held under an exclusive ``flock`` while it is rewritten, and every rewrite is an
atomic replace (temporary file, fsync, rename), so a crash leaves either the old file or the new one and
the archive copy is durable before the stream is cut.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import click

from machina.cli.common import bootstrap, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, fsync_dir, write_atomic
from machina.memory.index import MemoryIndex
from machina.memory.streams import archive_path, locked, stream_path
from machina.memory.verify import check_stream, verify_memory
from machina.ops.paths import configured_root
from machina.root import Root

MIB = 1024 * 1024


def streams(memory_dir: str) -> list[str]:
    """The ``*.jsonl`` streams directly in memory/ (the archive is not a stream)."""
    if not os.path.isdir(memory_dir):
        return []
    return sorted(
        os.path.join(memory_dir, n)
        for n in os.listdir(memory_dir)
        if n.endswith(".jsonl") and os.path.isfile(os.path.join(memory_dir, n))
    )


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


def quarantine(machina_root: Root, stream: str, day: str) -> tuple[int, str]:
    """Move a stream's bad lines (verbatim) to the archive, then rewrite the stream without them.

    The stream is checked again under its lock, so a line appended since the report is neither lost nor
    judged unseen.  Returns how many lines moved and where.
    """
    path = stream_path(machina_root.memory, stream)
    with locked(path) as fd:
        check = check_stream(machina_root.memory, stream)
        if not check.bad:
            return 0, ""
        mode = os.fstat(fd).st_mode & 0o777
        target = archive_path(machina_root.memory, os.path.basename(path) + ".rejected", day)
        ensure_dir(os.path.dirname(target))
        rejected = b"".join(b.raw if b.raw.endswith(b"\n") else b.raw + b"\n" for b in check.bad)
        _write_durably(target, rejected, mode)
        _write_durably(path, b"".join(check.good), mode)
    return len(check.bad), target


@click.command()
@click.option("--verify", "verify_only", is_flag=True, help="Only check (the default; kept for the manual's spelling).")
@click.option("--apply", is_flag=True, help="Move bad lines to memory/archive/YYYYMMDD/<stream>.rejected.")
@click.option("--rebuild", is_flag=True, help="Rebuild the search index (state/memory/) from the streams.")
@root_option
def reindex(verify_only: bool, apply: bool, rebuild: bool, root: str | None) -> int:
    """Check the memory streams and their search index; repair only when asked.

    Checks that every line is a JSON object (no torn last line), that the records of the typed streams
    (experiences, insights, skills, knowledge, entities, relations) fit their schemas, that no line was
    written twice, and that the search index agrees with the streams.  Read-only unless --apply, which
    moves each bad line (verbatim) to memory/archive/YYYYMMDD/<stream>.rejected and rewrites the stream
    atomically without it, or --rebuild, which makes the index again from the streams.
    Exit status: 0 all intact (or repaired), 1 problems found, 64 usage, 73 cannot write.
    """
    if verify_only and (apply or rebuild):
        raise click.UsageError("--verify excludes --apply and --rebuild")
    cfg = bootstrap("reindex", {"MACHINA_ROOT": os.path.abspath(root)} if root else None)
    cfg.require_root()
    machina_root = configured_root(cfg)
    assert machina_root is not None
    report = verify_memory(machina_root.memory, machina_root.state)
    for check in report.streams:
        for bad in check.bad:
            click.echo(str(bad))
    for problem in report.index_problems:
        click.echo(problem)
    day = time.strftime("%Y%m%d", time.gmtime())
    if apply:
        for check in report.streams:
            if check.bad:
                moved, target = quarantine(machina_root, check.stream, day)
                click.echo(f"moved {moved} bad line(s) of {check.path} to {target}")
    if rebuild or (apply and report.index_built):
        with MemoryIndex(machina_root.memory, machina_root.state) as index:
            lines = index.rebuild()
        click.echo(f"rebuilt the search index: {lines} line(s) from {len(report.streams)} stream(s)")
    click.echo(f"{len(report.streams)} stream(s) checked, {report.bad_lines} bad line(s)", err=True)
    if report.ok or apply or (rebuild and not report.bad_lines):
        return ExitCode.OK
    return ExitCode.FAILURE

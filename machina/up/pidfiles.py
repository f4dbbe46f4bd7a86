"""Pid files of ``machina up`` and the check that a pid still is the process its file names.

A pid file alone is not proof: the process may have died and its pid been reused.  Before anyone signals
a pid read from a file, :func:`pid_matches` checks that the process's command line still names the
expected executable.  Nothing in Machina finds processes by name; it reads pid files and checks them.
"""

from __future__ import annotations

import contextlib
import os

from machina.fsutil import write_atomic
from machina.proctree import pid_alive

PIDFILE_SUFFIX = ".pid"


def pidfile_path(runtime_dir: str, name: str) -> str:
    return os.path.join(runtime_dir, name + PIDFILE_SUFFIX)


def write_pidfile(path: str, pid: int) -> None:
    write_atomic(path, f"{pid}\n".encode(), fsync=False, mode=0o644)


def read_pidfile(path: str) -> int | None:
    """The pid in ``path``; None when the file is missing or does not hold a positive integer."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove_pidfile(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it does not exist (or is a zombie with an empty command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return [part.decode("utf-8", "replace") for part in raw.rstrip(b"\0").split(b"\0")]


def pid_matches(pid: int, executable: str) -> bool:
    """True when ``pid`` is alive and its argv names ``executable`` (its basename, or a ``-m`` module run)."""
    argv = cmdline(pid)
    if not argv or not pid_alive(pid):
        return False
    return any(os.path.basename(part) == executable or part == executable for part in argv[:4])

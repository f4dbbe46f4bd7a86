"""Process trees and process groups: the one place Machina lists a process's children and signals groups.

A group is signalled through the process that leads it.  :func:`kill_group` does so only while that
leader has not been collected: until then its pid, and so the group id, cannot belong to anybody else;
afterwards it might, so a second call (or a call after the leader was reaped) signals nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def signal_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to process group ``pgid``; False when there is no such group (or it is not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    """Signal the group ``proc`` leads (it was started with a session of its own), idempotently."""
    if proc.returncode is None:  # not yet collected: the group id is still the leader's own
        signal_group(proc.pid, sig)


def child_pids(pid: int) -> list[int]:
    """The children of process ``pid`` (``/proc/<pid>/task/*/children``; a scan of /proc where the kernel
    lacks that file)."""
    found: list[int] = []
    listed = False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
            listed = True
        except (OSError, ValueError):
            continue
    return found if listed else [p for p, ppid in _parents() if ppid == pid]


def process_group(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def kill_and_collect(pid: int) -> None:
    """SIGKILL a child of this process (with its group, when it leads one) and collect it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process_group(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _parents() -> list[tuple[int, int]]:
    """(pid, ppid) of every process /proc shows."""
    found = []
    for name in os.listdir("/proc"):
        fields = _stat(int(name)) if name.isdigit() else None
        if fields:
            found.append((int(name), int(fields[1])))
    return found


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
    return stat[stat.rfind(b")") + 2 :].split()

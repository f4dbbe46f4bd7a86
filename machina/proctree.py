"""Process trees and process groups: the one place Machina lists a process's children, signals groups and
asks whether a pid is alive.

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


def descendant_pids(pid: int) -> list[int]:
    """Every live descendant of process ``pid``: its children, theirs, and so on (a sandboxed tool runs
    two or three processes below the toolhost: bwrap, bwrap's init, the tool)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        children = child_pids(todo.pop())
        found += children
        todo += children
    return found


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie.  Another user's process counts as alive.

    The one liveness test for pid files, claim registries and owned temporary directories.  Where the
    process exists but its state cannot be read (an unreadable /proc), it counts as alive: every caller
    acts on "gone" by taking over what the process holds (its claims, its directory), and taking over
    from a live process does harm that waiting never does.
    """
    if pid <= 0:
        return False  # kill(0) and kill(-1) would ask about process groups, never about one process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = _read_stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False  # it ended between the two calls
    except OSError:
        return True
    return bool(fields) and fields[0] not in (b"Z", b"X")


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
        return _read_stat(pid)
    except OSError:
        return None


def _read_stat(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
    return stat[stat.rfind(b")") + 2 :].split()

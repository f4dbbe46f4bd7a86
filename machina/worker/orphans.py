"""What a killed job child leaves behind: processes it started in sessions of their own.

Killing a child's process group does not reach a process the child started with ``setsid`` (the policy
driver runs that way, so that its own timeout can kill its group).  The worker makes itself a *child
subreaper* (``PR_SET_CHILD_SUBREAPER``): such orphans are then re-parented to the worker instead of
init, and after a child dies :func:`kill_orphans` kills and collects every child of the worker that is
not one of its job children.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Collection

import prctl

logger = logging.getLogger(__name__)


def become_subreaper() -> None:
    prctl.set_child_subreaper(True)


def kill_orphans(keep: Collection[int]) -> list[int]:
    """SIGKILL (with its process group, when it leads one) and collect each child of this process whose pid
    is not in ``keep``; the pids killed.  The caller holds whatever lock guards starting children, so a
    child being started cannot be taken for an orphan."""
    killed = []
    for pid in child_pids(os.getpid()):
        if pid in keep:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if _process_group(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        killed.append(pid)
    if killed:
        logger.warning("killed %d process(es) left behind by a job child: %s", len(killed), killed)
    return killed


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


def _process_group(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


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

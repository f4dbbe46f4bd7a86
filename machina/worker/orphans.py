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
    me = os.getpid()
    killed = []
    for pid, ppid, pgrp in _processes():
        if ppid != me or pid in keep:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if pgrp == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        killed.append(pid)
    if killed:
        logger.warning("killed %d process(es) left behind by a job child: %s", len(killed), killed)
    return killed


def _processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, process group) of every process /proc shows."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            found.append((int(name), int(fields[1]), int(fields[2])))
    return found

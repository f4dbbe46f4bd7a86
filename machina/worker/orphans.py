"""What a killed job child leaves behind: processes it started in sessions of their own.

Killing a child's process group does not reach a process the child started with ``setsid`` (the policy
driver runs that way, so that its own timeout can kill its group).  The worker makes itself a *child
subreaper* (``PR_SET_CHILD_SUBREAPER``): such orphans are then re-parented to the worker instead of
init, and after a child dies :func:`kill_orphans` kills and collects every child of the worker that is
not one of its job children -- after a child was killed, and after a retired child exited (D15).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection

import prctl

from machina.proctree import child_pids, kill_and_collect

__all__ = ["become_subreaper", "child_pids", "kill_orphans"]

logger = logging.getLogger(__name__)


def become_subreaper() -> None:
    prctl.set_child_subreaper(True)


def kill_orphans(keep: Collection[int]) -> list[int]:
    """SIGKILL (with its process group, when it leads one) and collect each child of this process whose pid
    is not in ``keep``; the pids killed.  The caller holds whatever lock guards starting children, so a
    child being started cannot be taken for an orphan."""
    killed = [pid for pid in child_pids(os.getpid()) if pid not in keep]
    for pid in killed:
        kill_and_collect(pid)
    if killed:
        logger.warning("killed %d process(es) left behind by a job child: %s", len(killed), killed)
    return killed

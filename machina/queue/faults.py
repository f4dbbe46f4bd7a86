"""Named fault points for the kill -9 and race tests: a no-op in production.

The queue calls ``point("enqueue.placed")`` and the like at each step of a state change.  A test's child
process installs a hook (``faults.hook = ...``) that sends itself SIGKILL at the point it wants to test, so
a crash lands exactly between two steps (or raises OSError where a real fsync would fail); nothing in the
environment can arm it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``hook(name, context)``; None in production.
hook: Callable[[str, dict[str, Any]], None] | None = None

POINTS = (
    "enqueue.logged",  # ENQ record (with the job) written, group commit not yet done (not acknowledged)
    "enqueue.sync",  # the group commit begins (a hook raising OSError: a failed fsync)
    "enqueue.committed",  # ENQ record synced (the commit point), job file not yet written
    "enqueue.tmp_written",  # job file written in tmp/, not yet in inbox/
    "enqueue.placed",  # job file in inbox/, not yet acknowledged
    "claim.intent",  # claim recorded in the worker's registry, job still in inbox/
    "claim.moved",  # job in processing/, not yet returned to the worker
    "complete.result",  # result written to out/, job still in processing/
    "complete.logged",  # DONE record synced (the commit point), job still in processing/
    "complete.moved",  # job in done/, registry not yet updated
    "fail.result",  # failure result written, job still in processing/
    "recover.result",  # recovery result written, job still in processing/
    "recover.takeover",  # a restarted worker holds its registry, its predecessor's claims not yet recovered
    "wal.append",  # context: fd, line; a hook may write part of the line, then die (torn tail)
    "wal.sync",  # the WAL's fdatasync begins, appends not locked out (a hook raising OSError: a failed sync)
    "checkpoint.written",  # new checkpoint in place, covered segments not yet deleted
    "status.retry_scanned",  # context: job (its name); job_status has looked in retry/, not yet in the other places
)


def point(name: str, **context: Any) -> None:
    if hook is not None:
        hook(name, context)

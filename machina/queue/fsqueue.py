"""The filesystem queue: :class:`FileQueue`, the one implementation of :class:`~machina.queue.base.BaseQueue`.

Every state change is one ``rename`` between the state directories of ``$MACHINA_ROOT/queue``; file names
are those of :mod:`machina.queue.names`.  See the package docstring for the whole design.

The class is split by concern, one module each, joined here behind the one façade:
:mod:`~machina.queue.fscore` (state, :meth:`~machina.queue.fscore.QueueCore.transition` and the rest of the
plumbing), :mod:`~machina.queue.fsenqueue`, :mod:`~machina.queue.fsclaims`,
:mod:`~machina.queue.fsrecovery`, :mod:`~machina.queue.fsmaintenance` and :mod:`~machina.queue.fsstatus`.
"""

from __future__ import annotations

import os
import random
import weakref

from machina.clock import SYSTEM_CLOCK, Clock
from machina.queue.base import QueueConfig
from machina.queue.fsclaims import ClaimOps
from machina.queue.fscore import (
    COUNTER_NAMES,
    DEDUP_PRUNE_S,
    MAX_REASON,
    PURGE_RECORD_NAMES,
    RECOVERY_SWEEP_S,
    STATS_MAX_AGE_S,
    TMP_MAX_AGE_S,
)
from machina.queue.fsstatus import StatusOps
from machina.root import Root


class FileQueue(ClaimOps, StatusOps):
    """The queue under ``root/queue``.  Open one per process (it holds locks, a WAL segment and a watcher
    thread) and share it among threads; ``close()`` it at exit.

    A child made by ``fork`` without ``exec`` must open its own queue: in the child, the parent's claim
    registries and WAL segment are let go at fork time (so that the parent's death is still noticed while
    the child lives on) and the parent's queue object is unusable there.
    """

    def __init__(
        self,
        root: Root | str,
        config: QueueConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(root, config, clock=clock, rng=rng)
        _OPEN_QUEUES.add(self)

    def close(self) -> None:
        # Off the fork list first: a closed queue that is still referenced must not have the descriptor
        # numbers it once held closed again in a forked child, where they may be anything by now (a
        # subprocess's pipe ends: with a preexec_fn, the at-fork hooks run before the exec).
        _OPEN_QUEUES.discard(self)
        super().close()


_OPEN_QUEUES: weakref.WeakSet[FileQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_OPEN_QUEUES):
        queue._let_go_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "COUNTER_NAMES",
    "DEDUP_PRUNE_S",
    "MAX_REASON",
    "PURGE_RECORD_NAMES",
    "RECOVERY_SWEEP_S",
    "STATS_MAX_AGE_S",
    "TMP_MAX_AGE_S",
    "FileQueue",
]

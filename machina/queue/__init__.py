"""The durable job queue every Machina process meets at: ``$MACHINA_ROOT/queue``.

Contract
========
One small base class, :class:`BaseQueue` (``machina/queue/base.py``), two implementations,
:class:`FileQueue` (the default, one machine) and :class:`machina.queue.pg.PgQueue` (``MACHINA_QUEUE_URL=
postgresql://...``, hosts sharing a database: docs/SCALING.md), and one contract test mixin
(``tests/queue/queue_contract.py``) that both pass.  Callers program against BaseQueue only; the file
queue's WAL tools are the optional :class:`WalQueue` interface.  Open the queue once per process with
:func:`open_queue` and share it among threads; every method blocks (asyncio code calls it from a thread
pool)::

    from machina.queue import open_queue, load_request, InvalidRequest, DedupConflict, QueueNotWritable

    queue = open_queue(cfg)                        # machina-enqueued
    queue.start_maintenance()                      # replay WAL; promote retries, recover, checkpoint in a thread
    try:
        result = queue.enqueue(load_request(body)) # durable under MACHINA_WAL_FSYNC when it returns
        reply(200, result.as_response())           # {"ok":true,"queued":name,"request_id":...[,"deduplicated":true]}
    except InvalidRequest as e:   reply(400, e.reason)
    except DedupConflict:         reply(409, ...)
    except QueueNotWritable:      reply(503, ...)  # ENOSPC/EROFS/EDQUOT/EFBIG/EIO: nothing was queued
    except QueuedNotDurable as e: reply(500, ...)  # queued as e.name but its fsync failed: do not resend
    queue.stats()                                   # QueueStats(sizes={state: n}, counters={name: n})
    queue.job_status(name)                          # JobStatus(state, attempt, results, owner ...) or None

    queue = open_queue(cfg)                        # machina-worker@N
    queue.recover(worker_id)                       # take over the id: its orphaned claims -> inbox (RECOVER)
    while not stop.is_set():
        claim = queue.claim(worker_id, timeout=1.0)  # wakes within ms of a new job (inotify)
        if claim is None: continue
        ...  run claim.request; queue.heartbeat(claim) every MACHINA_CLAIM_TIMEOUT_MS / 3 or so on long jobs
        queue.complete(claim, result) | queue.fail(claim, reason, retryable=...) | queue.ask(claim, result)
        | queue.release(claim)
    queue.close()                                  # on SIGTERM: release(claim) first, then close

Threads: with fsync off, enqueue is CPU-bound and more threads do not add throughput (the GIL); with fsync
on, threads waiting in the same group commit share its fsyncs, so a pool of 8-32 threads pays off.

Files (DESIGN.md section 3; names in :mod:`machina.queue.names`)
==============================================================
``inbox/`` waiting, in name order = claim order (priority, lower first; then enqueue time; FIFO within a
priority for one enqueuer) · ``processing/`` claimed · ``retry/retry_{due}_{stem}.a{N}.json`` waiting for a
retry · ``asked/`` waiting for an operator's approval (``ask``; ``approve`` resumes it with leases, see
:mod:`machina.approvals`) · ``done/`` · ``failed/`` (permanent: invalid request, or ``retryable=False``) ·
``dlq/`` (attempts spent) · ``out/{stem}.attempt{N}.result.json`` each attempt's result envelope ``{"name","attempt",
"status","worker_id","finished_ms","result"[,"error","retry_due_ms"]}`` · ``tmp/`` files being written ·
``wal/`` log and checkpoint · ``$MACHINA_ROOT/state/claims/<worker_id>.json`` who holds which claim.

Delivery and durability
=======================
At-least-once.  Every state change is one ``rename``.  With the WAL on, **the WAL is the commit point**
(DESIGN.md section 3): an enqueue appends an ``ENQ`` record carrying the job's canonical body, group-commits
it (one ``fdatasync`` for every thread waiting, :mod:`machina.queue.durable`) under ``MACHINA_WAL_FSYNC=1``,
and only then writes the job in ``tmp/`` and moves it into ``inbox/`` with ``renameat2(RENAME_NOREPLACE)``,
without an fsync of its own.  A completion writes its result, syncs its ``DONE`` record, then moves the job
to ``done/``; other transitions move, log and sync the record (:meth:`FileQueue.transition`).  A crash
between a synced record and its file is repaired: jobs from :mod:`machina.queue.rebuild`, completions by
recovery (a result that says done finishes the move).  Checkpoints ``syncfs`` the queue before declaring
the records they cover durable.  Without the WAL, files and directories are fsynced before a change is
reported.  The claim's ``inbox -> processing`` rename is never synced: were it lost in a power cut, the job
would simply be in the inbox again.

A claim is recorded in the worker's registry before the rename and the worker holds a ``flock`` on that
registry while it lives.  A job whose owner died (lock free: the process is gone, or the machine
rebooted) or went silent for ``MACHINA_CLAIM_TIMEOUT_MS`` (no heartbeat) goes back to the inbox with
attempt + 1 (or to ``dlq/`` when its attempts are spent, so a job that kills its worker cannot loop
forever): at worker start (``recover(worker_id)``), and in every process's ``maintain`` (once a second).
A worker whose claim was taken away gets :class:`ClaimLost` from ``complete``; since each attempt has its
own file name, a job is never in ``done/`` twice.

Retries: capped exponential backoff with jitter (:mod:`machina.backoff`) between
``MACHINA_RETRY_MIN_MS`` and ``MACHINA_RETRY_MAX_MS``, at most ``MACHINA_MAX_ATTEMPTS``; a request's
``_queue`` settings (priority, max_attempts, retry_min_ms, retry_max_ms) override them and, living in the
body that is never rewritten, survive every retry.

WAL (:mod:`machina.queue.wal`, :mod:`machina.queue.walindex`): a segment per process (no cross-process
lock on the write path; a segment's ``flock`` tells live from sealed), JSON lines with an optional CRC-32,
the record types of DESIGN.md (ENQ DEDUP SCHED PROMOTE RECOVER DONE ASK APPROVE RETRY DLQ FAIL) plus
CLAIM, RELEASE, PURGE, UNENQ (an enqueue taken back after its fsync failed), TRUNC and CKPT_BAD,
group-committed fsyncs, checkpoints every ``MACHINA_WAL_CHECKPOINT_MS`` (by whichever process finds one
due; ``maintain`` does it), torn or corrupt tails cut, logged and counted.
The directories are the truth once a checkpoint has synced them: deleting ``wal/`` then loses no job, only
dedup entries and counters (jobs acknowledged since the last checkpoint may be lost with it).
``MACHINA_WAL_ENABLE=0`` runs without it (dedup then lives in memory only).

Dedup (:mod:`machina.queue.dedup`): ``request_id -> (first name, SHA-256 of the canonical body, time)``
for ``MACHINA_DEDUP_TTL_MS``; same body -> the first name, ``deduplicated``; different body ->
:class:`DedupConflict`.  Exact within a process; across processes see the module's note.

Wake-up: an inotify watcher thread (ctypes) wakes waiting claims within milliseconds; a rescan every
``MACHINA_SERVE_SCAN_MS`` is the fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from machina.queue.base import (
    FINAL_STATES,
    STATES,
    BaseQueue,
    Claim,
    EnqueueResult,
    JobInfo,
    JobStatus,
    QueueConfig,
    QueueStats,
    WalQueue,
)
from machina.queue.errors import (
    ClaimLost,
    DedupConflict,
    DedupPending,
    InvalidRequest,
    JobNotFound,
    QueuedNotDurable,
    QueueError,
    QueueNotWritable,
    QueueUnavailable,
    WorkerIdInUse,
)
from machina.queue.fsqueue import FileQueue
from machina.queue.request import QueueSettings, Request, load_request, parse_json, validate_request

if TYPE_CHECKING:
    from machina.clock import Clock
    from machina.config import Config

__all__ = [
    "FINAL_STATES",
    "STATES",
    "BaseQueue",
    "Claim",
    "ClaimLost",
    "DedupConflict",
    "DedupPending",
    "EnqueueResult",
    "FileQueue",
    "InvalidRequest",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "QueueConfig",
    "QueueError",
    "QueueNotWritable",
    "QueueSettings",
    "QueueStats",
    "QueueUnavailable",
    "QueuedNotDurable",
    "Request",
    "WalQueue",
    "WorkerIdInUse",
    "load_request",
    "open_queue",
    "parse_json",
    "validate_request",
]


def open_queue(cfg: Config, clock: Clock | None = None) -> BaseQueue:
    """The configured queue: the database of MACHINA_QUEUE_URL (:class:`machina.queue.pg.PgQueue`), else the
    file queue of MACHINA_ROOT (ConfigError, exit 78, when the root does not exist).  The one place a
    backend is chosen."""
    from machina.clock import SYSTEM_CLOCK
    from machina.root import open_root

    config = QueueConfig.from_config(cfg)
    if config.url is not None:
        from machina.queue.pg import PgQueue

        password = cfg["MACHINA_QUEUE_PASSWORD"]
        return PgQueue(config.url, config, password=password, clock=clock or SYSTEM_CLOCK, auto_migrate=False)
    return FileQueue(open_root(cfg), config, clock=clock or SYSTEM_CLOCK)

"""The queue contract (huey's ``BaseStorage`` idea): one small documented base class, the value types it
deals in, and its configuration.  :class:`machina.queue.fsqueue.FileQueue` implements it on the
filesystem; ``tests/queue/contract.py`` holds the test mixin every implementation must pass.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from machina.queue.errors import QueueError
from machina.queue.request import Request

if TYPE_CHECKING:
    from machina.config import Config

#: Queue states, in the order a job usually moves through them.  ``asked``: stopped until an operator
#: approves the tool calls that need a lease (:meth:`BaseQueue.ask`, :meth:`BaseQueue.approve`).
STATES = ("inbox", "processing", "retry", "asked", "done", "failed", "dlq")
#: States a job leaves only by an operator's hand (``approve``, ``requeue``, ``purge``).
FINAL_STATES = ("asked", "done", "failed", "dlq")


@dataclass(frozen=True)
class QueueConfig:
    """The queue's knobs (OPERATIONS.md "Durability", "Scan / retry knobs", "Enqueue dedup")."""

    fsync: bool = False  #: MACHINA_WAL_FSYNC: fsync files and directories before a change is reported
    wal_enable: bool = True  #: MACHINA_WAL_ENABLE
    wal_crc32: bool = False  #: MACHINA_WAL_CRC32
    checkpoint_ms: int = 5000  #: MACHINA_WAL_CHECKPOINT_MS
    scan_ms: int = 150  #: MACHINA_SERVE_SCAN_MS: fallback rescan interval
    retry_min_ms: int = 1000  #: MACHINA_RETRY_MIN_MS
    retry_max_ms: int = 60000  #: MACHINA_RETRY_MAX_MS
    max_attempts: int = 5  #: MACHINA_MAX_ATTEMPTS
    dedup_ttl_ms: int = 300000  #: MACHINA_DEDUP_TTL_MS (0: no dedup)
    claim_timeout_ms: int = 600000  #: MACHINA_CLAIM_TIMEOUT_MS: a silent owner loses its claims after this
    url: str | None = None  #: MACHINA_QUEUE_URL: None = the file queue; postgresql://... = machina.queue.pg
    pool_size: int = 4  #: MACHINA_QUEUE_POOL_SIZE: database connections per process (PostgreSQL only)

    @classmethod
    def from_config(cls, cfg: Config) -> QueueConfig:
        return cls(
            fsync=cfg["MACHINA_WAL_FSYNC"],
            wal_enable=cfg["MACHINA_WAL_ENABLE"],
            wal_crc32=cfg["MACHINA_WAL_CRC32"],
            checkpoint_ms=cfg["MACHINA_WAL_CHECKPOINT_MS"],
            scan_ms=cfg["MACHINA_SERVE_SCAN_MS"],
            retry_min_ms=cfg["MACHINA_RETRY_MIN_MS"],
            retry_max_ms=cfg["MACHINA_RETRY_MAX_MS"],
            max_attempts=cfg["MACHINA_MAX_ATTEMPTS"],
            dedup_ttl_ms=cfg["MACHINA_DEDUP_TTL_MS"],
            claim_timeout_ms=cfg["MACHINA_CLAIM_TIMEOUT_MS"],
            url=cfg["MACHINA_QUEUE_URL"],
            pool_size=cfg["MACHINA_QUEUE_POOL_SIZE"],
        )


@dataclass(frozen=True)
class EnqueueResult:
    name: str  #: the job's name (its inbox file name); for a repeat, the first request's
    request_id: str | None = None
    deduplicated: bool = False

    def as_response(self) -> dict[str, Any]:
        """The ``POST /enqueue`` 200 body of DESIGN.md section 4."""
        body: dict[str, Any] = {"ok": True, "queued": self.name, "request_id": self.request_id}
        if self.deduplicated:
            body["deduplicated"] = True
        return body


@dataclass(frozen=True)
class Claim:
    """A job claimed by a worker: hand it back with complete/fail/release, keep it with heartbeat."""

    name: str  #: the job's name (stable across attempts)
    file: str  #: this attempt's file in processing/
    attempt: int  #: 1 for the first run
    request: dict[str, Any]  #: the parsed, validated run request
    request_id: str | None
    priority: int
    enqueued_ms: int
    max_attempts: int  #: after this many attempts a retryable failure goes to dlq/
    retry_min_ms: int
    retry_max_ms: int
    worker_id: str
    claimed_ms: int


@dataclass(frozen=True)
class JobInfo:
    """One line of ``list_jobs``."""

    state: str
    name: str
    file: str
    attempt: int
    priority: int
    enqueued_ms: int
    due_ms: int | None = None  #: retry/ only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JobStatus:
    """What ``GET /jobs/<name>`` answers: where the job is and each attempt's result."""

    name: str
    state: str
    file: str
    attempt: int
    priority: int
    enqueued_ms: int
    due_ms: int | None = None
    owner: dict[str, Any] | None = None  #: processing/ only: worker_id, pid, boot_id, heartbeat_ms
    results: list[dict[str, Any]] = field(default_factory=list)  #: out/ envelopes, attempt order
    request: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueueStats:
    sizes: dict[str, int]  #: files per state (inbox, processing, retry, asked, done, failed, dlq)
    counters: dict[str, int]  #: transitions since the WAL began (all processes), and error counts

    def as_dict(self) -> dict[str, Any]:
        return {"sizes": dict(self.sizes), "counters": dict(self.counters)}


@runtime_checkable
class WalQueue(Protocol):
    """The file queue's own write-ahead log (``machina queue checkpoint``, ``machina wal verify``).  An optional
    interface: callers test ``isinstance(queue, WalQueue)``; a database backend has its own log instead."""

    def checkpoint(self) -> bool: ...

    def verify_wal(self) -> Any: ...


class BaseQueue(abc.ABC):
    """A durable, at-least-once job queue shared by processes.

    Thread-safe: every method may be called from many threads at once; all of them block (call them from
    a thread pool in asyncio code).  Implementations must pass ``tests/queue/contract.py``.
    """

    config: QueueConfig

    # --- producers -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def enqueue(
        self, request: dict[str, Any] | Request, request_id: str | None = None, priority: int | None = None
    ) -> EnqueueResult:
        """Accept a run request; return only once the job is durable (under MACHINA_WAL_FSYNC).

        ``request`` is a dict (validated here) or a :class:`Request` from ``load_request``/``validate_request``.
        ``request_id`` defaults to the body's; ``priority`` to ``_queue.priority``, else 5000.  A
        ``request_id`` seen within MACHINA_DEDUP_TTL_MS answers the first job's name with
        ``deduplicated=True`` when the canonical body's SHA-256 matches, and raises DedupConflict when it does
        not.  Raises InvalidRequest, QueueNotWritable (full or read-only disk: nothing was queued).
        """

    @property
    def commits_batches(self) -> bool:
        """True when :meth:`enqueue_batch` commits a batch together (one sync for all), so that few threads
        calling it with many requests each beat many threads calling :meth:`enqueue`."""
        return False

    def enqueue_batch(self, requests: Sequence[Request]) -> list[EnqueueResult | Exception]:
        """Enqueue validated requests at once: one result per request, in order, the
        :class:`EnqueueResult` or the exception :meth:`enqueue` raises for it (nothing of that request was
        queued).  Each acknowledged job is as durable as one from :meth:`enqueue`; copies of a request_id
        in one batch make one job.  A backend may commit the batch together (the file queue: one WAL
        group commit for all); this default enqueues them one by one."""
        results: list[EnqueueResult | Exception] = []
        for request in requests:
            try:
                results.append(self.enqueue(request))
            except (QueueError, OSError) as exc:
                results.append(exc)
        return results

    # --- workers ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def claim(self, worker_id: str, timeout: float = 0.0) -> Claim | None:
        """Take the next job (lowest priority number, then oldest), waiting up to ``timeout`` seconds.

        The first claim of a worker id in a process takes over that id: its previous holder's orphaned
        claims go back to the inbox (attempt + 1, RECOVER).  Raises WorkerIdInUse when a live process
        holds the id.  Invalid requests met on the way go to failed/ and are skipped.
        """

    @abc.abstractmethod
    def heartbeat(self, claim: Claim) -> None:
        """Tell the queue the owner is alive (long jobs: well within MACHINA_CLAIM_TIMEOUT_MS).
        Raises ClaimLost when the job was taken away."""

    @abc.abstractmethod
    def complete(self, claim: Claim, result: Any = None) -> None:
        """Record ``result`` (JSON) as this attempt's result and move the job to done/.  ClaimLost if the
        claim was recovered meanwhile (the result is kept; the job runs again elsewhere)."""

    @abc.abstractmethod
    def fail(self, claim: Claim, reason: str, *, retryable: bool = True, result: Any = None) -> str:
        """Record a failed attempt.  Retryable: retry/ after a backoff, or dlq/ once max_attempts are spent;
        permanent: failed/.  Returns the new state ("retry", "dlq" or "failed")."""

    @abc.abstractmethod
    def ask(self, claim: Claim, result: Any = None) -> None:
        """The attempt stopped because a tool call needs an operator's approval (a lease): record ``result``
        (JSON; its ``approvals`` list the calls) as this attempt's result and move the job to asked/, where
        it waits for :meth:`approve` or ``purge``.  ClaimLost as for :meth:`complete`."""

    @abc.abstractmethod
    def approve(self, name: str, leases: list[dict[str, Any]]) -> str:
        """Resume job ``name`` from asked/: its body's ``_leases`` become ``leases`` (machina.approvals: one
        ``{"aid", "inputs_digest", "token"}`` per approved call; a request_id's dedup entry is unchanged) and
        it returns to the inbox as its next attempt.  Returns the new file name.  JobNotFound unless the job
        is in asked/; InvalidRequest when ``leases`` is not a valid ``_leases`` list."""

    @abc.abstractmethod
    def release(self, claim: Claim) -> None:
        """Give the job back untouched (shutdown): it returns to the inbox without using an attempt."""

    @abc.abstractmethod
    def recover(self, worker_id: str | None = None) -> list[str]:
        """Give orphaned claims back to the inbox (attempt + 1; dlq/ when attempts are spent).

        With ``worker_id``: take over that id (as a worker does at start) and recover what its previous
        holder had claimed.  Without: recover claims of dead owners, of owners silent for longer than
        MACHINA_CLAIM_TIMEOUT_MS, and claims nobody owns.  Returns the job names recovered.
        """

    @abc.abstractmethod
    def maintain(self) -> None:
        """Periodic duties, each when due: promote due retries, recover dead claims, checkpoint the WAL."""

    @abc.abstractmethod
    def start_maintenance(self) -> None:
        """Run :meth:`maintain` every MACHINA_SERVE_SCAN_MS in a background thread until :meth:`close` (for a
        process that claims nothing itself, such as machina-enqueued); load what the backend needs first."""

    # --- operators -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def requeue(self, name: str) -> str:
        """Send a job in dlq/ or failed/ back to the inbox for one more attempt (a waiting retry: now).
        Returns the new file name.  JobNotFound otherwise."""

    @abc.abstractmethod
    def purge(self, state: str, older_than_ms: int) -> int:
        """Delete jobs (and their results) that entered ``state`` (asked, done, failed or dlq) more than
        ``older_than_ms`` ago.  Returns how many."""

    @abc.abstractmethod
    def list_jobs(self, state: str) -> list[JobInfo]:
        """Jobs in ``state``: inbox in claim order, retry by due time, others by name."""

    @abc.abstractmethod
    def job_status(self, name: str, *, with_request: bool = False) -> JobStatus | None:
        """Where job ``name`` is and its results; None when unknown.  The request (``with_request``) shows
        carried leases without their tokens (machina.approvals.without_tokens)."""

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """Sizes per state and counters; cheap enough for every /metrics scrape."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release locks, threads and files."""

    #: What the backend is, for messages: "file" or "postgresql".
    backend: str = "file"

    def __enter__(self) -> BaseQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

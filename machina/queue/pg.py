"""The PostgreSQL queue: :class:`PgQueue`, the queue contract on a database many hosts share.

Selected by ``MACHINA_QUEUE_URL=postgresql://...`` (docs/SCALING.md).  Same names, states, priorities,
attempts, backoff, dead letters, dedup and results as the file queue; each transition is one transaction
(tables in :mod:`machina.queue.pgschema`).

- **Claim**: ``SELECT ... ORDER BY name LIMIT 1 FOR UPDATE SKIP LOCKED`` on the inbox (names sort in claim
  order), so concurrent workers never wait for each other and never take the same job.  Due retries are
  promoted to the inbox first.
- **Wake-up**: every change that makes a job claimable sends ``NOTIFY machina_queue``; a listener thread
  wakes waiting claims.  A rescan every MACHINA_SERVE_SCAN_MS is the fallback.
- **Worker ids** are qualified by the host name (``host/1``), so every host runs the same units.
- **Liveness**: a worker id is held by a session advisory lock on a connection of its own
  (:class:`~machina.queue.pgconn.Session`): a process that dies, or loses its connection, loses the lock, and
  any other process then recovers its claims (``pg_locks`` tells).  A live owner silent for
  MACHINA_CLAIM_TIMEOUT_MS (no ``claim`` or ``heartbeat``) loses its claims too.
- **Durability**: ``synchronous_commit`` follows MACHINA_WAL_FSYNC; a method returns after its commit.
- **Time** is this host's clock (passed to every statement, so tests can drive it); hosts sharing a
  database must keep their clocks in step (NTP), as they would for claim timeouts anyway.

There is no WAL, checkpoint or ``wal verify`` here: the database's own WAL is the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from machina.approvals import LEASES_KEY, without_tokens
from machina.backoff import retry_delay_ms
from machina.clock import SYSTEM_CLOCK, Clock
from machina.exitcodes import ExitCode
from machina.log import fields
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
)
from machina.queue.claims import check_worker_id
from machina.queue.errors import (
    ClaimLost,
    DedupConflict,
    InvalidRequest,
    JobNotFound,
    QueueError,
    QueueUnavailable,
    WorkerIdInUse,
)
from machina.queue.names import (
    JobNamer,
    JobRef,
    parse_name,
)
from machina.queue.pgconn import CHANNEL, Connector, Listener, Pool, Session
from machina.queue.pgschema import LATEST, LOCK_CLASS, SchemaTooNew, current_version, migrate
from machina.queue.request import Request, as_request, job_priority, load_request, validate_request

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]

#: How often maintain() recovers dead or silent owners' claims, forgets expired dedup entries and checks
#: the session connection (seconds).
SWEEP_S = 1.0
#: Tries, and the pause between them, to take a worker id's lock (a sweep holds a dead id's lock briefly).
TAKE_OVER_TRIES = 5
TAKE_OVER_PAUSE_S = 0.02
#: A claim of ours older than this that no caller here holds was lost in transit and is recovered (ms).
UNKNOWN_CLAIM_GRACE_MS = 10_000
#: A claim records its worker's heartbeat at most this often (ms); heartbeat() always does.
CLAIM_BEAT_MS = 1000
#: stats() answers from a cache this young (seconds).
STATS_MAX_AGE_S = 0.5
#: Longest failure reason kept in a result.
MAX_REASON = 4000
#: The counters ``stats`` reports, as the file queue names them (WAL-only ones stay 0 here).
COUNTERS = (
    "enqueued",
    "enqueues_taken_back",
    "deduplicated",
    "claimed",
    "released",
    "retries_scheduled",
    "retries_promoted",
    "recovered",
    "done",
    "asked",
    "approved",
    "requeued",
    "dead_lettered",
    "failed",
    "purged",
    "wal_truncations",
    "checkpoints_corrupt",
    "wal_write_errors",
)

_COUNT = """INSERT INTO machina_counters (instance, counter, value) VALUES (%s, %s, %s)
    ON CONFLICT (instance, counter) DO UPDATE SET value = machina_counters.value + EXCLUDED.value"""
_NOTIFY_AND_COUNT = f"WITH counted AS ({_COUNT} RETURNING 1) SELECT pg_notify('{CHANNEL}', '')"
# The statements of the hot paths: each transition is one statement (atomic by itself), its counter and
# wake-up folded in as data-modifying CTEs, so a job costs one round trip per transition.
#: Enqueue: the job, its counter and the wake-up (nothing at all on a name collision).
_ENQUEUE = """WITH placed AS (
        INSERT INTO machina_jobs (name, state, attempt, priority, enqueued_ms, state_ms, request_id, body)
        VALUES (%(name)s, 'inbox', 1, %(priority)s, %(enqueued)s, %(now)s, %(rid)s, %(body)s)
        ON CONFLICT (name) DO NOTHING RETURNING name),
    counted AS (
        INSERT INTO machina_counters (instance, counter, value) SELECT %(instance)s, 'enqueued', 1 FROM placed
        ON CONFLICT (instance, counter) DO UPDATE SET value = machina_counters.value + EXCLUDED.value RETURNING 1)
    SELECT name, pg_notify('machina_queue', '') FROM placed"""
#: Claim: the first job in claim order among the inbox and the retries due (each side through its own
#: index), and its counter.  A due retry claimed here is promoted and claimed at once.  Its commit does not
#: wait for the WAL flush even under MACHINA_WAL_FSYNC (as the file queue's claim rename is not fsynced):
#: a claim lost in a database crash only means the job waits in the inbox again, and its worker's
#: complete() answers ClaimLost.
_CLAIM = """WITH first_waiting AS (
        SELECT name FROM machina_jobs WHERE state = 'inbox' ORDER BY name LIMIT 1 FOR UPDATE SKIP LOCKED),
    first_due AS (
        SELECT name FROM machina_jobs WHERE state = 'retry' AND due_ms <= %(now)s
        ORDER BY due_ms LIMIT 1 FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE machina_jobs j SET state = 'processing', owner_id = %(owner)s, claimed_ms = %(now)s,
            state_ms = %(now)s, due_ms = NULL
        WHERE j.name = (SELECT name FROM (SELECT name FROM first_waiting UNION ALL SELECT name FROM first_due) c
                        ORDER BY name LIMIT 1)
        RETURNING j.name, j.attempt, j.priority, j.enqueued_ms, j.body),
    counted AS (
        INSERT INTO machina_counters (instance, counter, value) SELECT %(instance)s, 'claimed', 1 FROM claimed
        ON CONFLICT (instance, counter) DO UPDATE SET value = machina_counters.value + EXCLUDED.value RETURNING 1),
    unflushed AS (SELECT set_config('synchronous_commit', 'off', true))
    SELECT name, attempt, priority, enqueued_ms, body FROM claimed, unflushed"""
#: Settle a claim (complete, fail, ask, release): the move, this attempt's result (kept even when the
#: claim was taken away, unless the job is gone), the counter and, back to the inbox, the wake-up.
_SETTLE = """WITH moved AS (
        UPDATE machina_jobs SET state = %(state)s, attempt = %(attempt)s, due_ms = %(due)s, owner_id = NULL,
            claimed_ms = NULL, state_ms = %(now)s
        WHERE name = %(name)s AND state = 'processing' AND attempt = %(current)s AND owner_id = %(owner)s
        RETURNING name),
    recorded AS (
        INSERT INTO machina_results (name, attempt, envelope)
        SELECT %(name)s, %(current)s, %(envelope)s::text
        WHERE %(envelope)s::text IS NOT NULL AND EXISTS (SELECT 1 FROM machina_jobs WHERE name = %(name)s)
        ON CONFLICT (name, attempt) DO UPDATE SET envelope = EXCLUDED.envelope RETURNING 1),
    counted AS (
        INSERT INTO machina_counters (instance, counter, value) SELECT %(instance)s, %(counter)s, 1 FROM moved
        ON CONFLICT (instance, counter) DO UPDATE SET value = machina_counters.value + EXCLUDED.value RETURNING 1)
    SELECT count(*), CASE WHEN %(notify)s AND count(*) > 0 THEN pg_notify('machina_queue', '') END FROM moved"""
_JOB_COLUMNS = "name, state, attempt, priority, enqueued_ms, due_ms, body, owner_id"
_LIVE_LOCKS = """SELECT l.objid::bigint FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


class PgQueue(BaseQueue):
    """The queue in the database at ``url``.  Open one per process and share it among threads; ``close()``
    it at exit (that lets go of its worker ids, as a dying process would)."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        config: QueueConfig | None = None,
        *,
        password: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        auto_migrate: bool = True,
    ) -> None:
        self.config = config or QueueConfig(url=url)
        self.clock = clock
        self._rng = rng or random.Random(secrets.randbits(64))  # noqa: S311 (jitter and name spread)
        self._host = socket.gethostname()
        self._instance = f"{self._host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.connector = Connector(url, password, fsync=self.config.fsync, application="machina")
        self._check_schema(auto_migrate)
        self._pool = Pool(self.connector, self.config.pool_size)
        self._session = Session(self.connector)
        self._listener = Listener(self.connector)
        self._workers: dict[str, int] = {}  # worker id -> its lock key, held by this process
        self._active: set[tuple[str, int]] = set()  # (name, attempt) claimed here and not yet settled
        self._beats: dict[str, int] = {}  # worker id -> when a claim last recorded its heartbeat (ms)
        self._names = JobNamer(self.clock, self._rng)
        self._maintain_lock = threading.Lock()
        self._swept_at = float("-inf")
        self._stats_cache: tuple[float, QueueStats] | None = None
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None

    def _check_schema(self, auto_migrate: bool) -> None:
        with self.connector.connect(autocommit=True) as conn:
            try:
                version = current_version(conn)
                if version < LATEST and auto_migrate:
                    migrate(conn)
                    version = LATEST
            except psycopg.OperationalError as exc:
                raise QueueUnavailable("check the schema", self.connector.scrub(exc)) from None
        if version > LATEST:
            raise SchemaTooNew(
                f"the queue database has schema version {version}, newer than this machina knows ({LATEST}): "
                "upgrade machina on this host"
            )
        if version < LATEST:
            raise QueueError(
                f"the queue database has schema version {version}, not {LATEST}: run `machina queue migrate`",
                ExitCode.CONFIG,
            )

    # --- enqueue ---------------------------------------------------------------------------------------

    def enqueue(
        self, request: dict[str, Any] | Request, request_id: str | None = None, priority: int | None = None
    ) -> EnqueueResult:
        req = as_request(request, request_id)
        prio = job_priority(req, priority)
        rid = req.request_id
        dedup = rid is not None and self.config.dedup_ttl_ms > 0
        outcome = self._pool.run("enqueue", lambda conn: self._enqueue_tx(conn, req, prio, dedup), transaction=dedup)
        if isinstance(outcome, tuple):  # (first name, its sha256): a repeat
            first, sha = outcome
            if not secrets.compare_digest(sha, req.sha256):
                raise DedupConflict(rid or "", first)
            log.debug("deduplicated", extra=fields(job=first, request_id=rid))
            return EnqueueResult(first, rid, True)
        log.debug("enqueued", extra=fields(job=outcome, request_id=rid))
        return EnqueueResult(outcome, rid, False)

    def _enqueue_tx(self, conn: Conn, req: Request, prio: int, dedup: bool) -> str | tuple[str, str]:
        now = self._now_ms()
        ref = self._names.next(prio, req.request_id)
        first_name = ref.name
        if dedup:
            mine = conn.execute(
                """INSERT INTO machina_dedup (request_id, name, sha256, ts_ms) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (request_id) DO UPDATE SET name = EXCLUDED.name, sha256 = EXCLUDED.sha256,
                       ts_ms = EXCLUDED.ts_ms
                   WHERE machina_dedup.ts_ms <= %s RETURNING 1""",
                (req.request_id, ref.name, req.sha256, now, now - self.config.dedup_ttl_ms),
            ).fetchone()
            if mine is None:
                row = conn.execute(
                    "SELECT name, sha256 FROM machina_dedup WHERE request_id = %s", (req.request_id,)
                ).fetchone()
                if row is not None:
                    if secrets.compare_digest(row[1], req.sha256):
                        self._count(conn, "deduplicated")
                    return (row[0], row[1])
        for _ in range(16):
            args = {
                "name": ref.name,
                "priority": prio,
                "enqueued": ref.epoch_ms,
                "now": now,
                "rid": req.request_id,
                "body": req.canonical.decode("utf-8"),
                "instance": self._counter_key(conn),
            }
            if conn.execute(_ENQUEUE, args).fetchone() is not None:
                break
            ref = self._names.next(prio, req.request_id)  # another enqueuer drew the same name: draw again
        else:
            raise QueueError("could not find a free job name after 16 tries")
        if dedup and ref.name != first_name:  # drawn again: the dedup entry must name the job that exists
            conn.execute("UPDATE machina_dedup SET name = %s WHERE request_id = %s", (ref.name, req.request_id))
        return ref.name

    # --- claim -----------------------------------------------------------------------------------------

    def claim(self, worker_id: str, timeout: float = 0.0) -> Claim | None:
        self._take_over(worker_id)
        if timeout > 0:
            self._listener.start()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            generation = self._listener.generation
            self.maintain()
            claimed, next_due = self._pool.run("claim", lambda conn: self._claim_tx(conn, worker_id), transaction=False)
            if claimed is not None:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            wait = min(remaining, self.config.scan_ms / 1000)
            if next_due is not None:
                wait = min(wait, max(0.0, (next_due - self._now_ms()) / 1000))
            self._listener.wait(generation, wait)

    def _claim_tx(self, conn: Conn, worker_id: str) -> tuple[Claim | None, int | None]:
        """One statement: the first job in claim order among the inbox and the retries now due."""
        now = self._now_ms()
        owner = self._owner_key(worker_id)
        if now - self._beats.get(worker_id, -CLAIM_BEAT_MS) >= CLAIM_BEAT_MS:  # claiming is being alive
            conn.execute("UPDATE machina_workers SET heartbeat_ms = %s WHERE worker_id = %s", (now, owner))
            self._beats[worker_id] = now
        while True:
            args = {"owner": owner, "now": now, "instance": self._counter_key(conn)}
            row = conn.execute(_CLAIM, args).fetchone()
            if row is None:
                due = conn.execute("SELECT min(due_ms) FROM machina_jobs WHERE state = 'retry'").fetchone()
                return None, (due[0] if due else None)
            name, attempt, priority, enqueued_ms, body = row
            self._active.add((name, attempt))
            try:
                req = load_request(body)
            except InvalidRequest as exc:  # a row edited by hand: it cannot run
                self._active.discard((name, attempt))
                with conn.transaction():
                    self._finish_invalid(conn, name, attempt, worker_id, exc.reason)
                continue
            return self._claim_of(name, attempt, priority, enqueued_ms, req, worker_id, now), None

    def _claim_of(
        self, name: str, attempt: int, priority: int, enqueued_ms: int, req: Request, worker_id: str, now: int
    ) -> Claim:
        s, cfg = req.settings, self.config
        return Claim(
            name=name,
            file=_ref(name, attempt).file,
            attempt=attempt,
            request=req.body,
            request_id=req.request_id,
            priority=priority,
            enqueued_ms=enqueued_ms,
            max_attempts=s.max_attempts or cfg.max_attempts,
            retry_min_ms=s.retry_min_ms if s.retry_min_ms is not None else cfg.retry_min_ms,
            retry_max_ms=s.retry_max_ms if s.retry_max_ms is not None else cfg.retry_max_ms,
            worker_id=worker_id,
            claimed_ms=now,
        )

    def _finish_invalid(self, conn: Conn, name: str, attempt: int, worker_id: str, reason: str) -> None:
        log.warning("invalid request moved to failed/: %s", reason, extra=fields(job=name))
        conn.execute(
            "UPDATE machina_jobs SET state = 'failed', owner_id = NULL, state_ms = %s WHERE name = %s",
            (self._now_ms(), name),
        )
        self._put_result(conn, name, attempt, self._envelope(name, attempt, "failed", worker_id, error=reason))
        self._count(conn, "failed")

    def heartbeat(self, claim: Claim) -> None:
        self._held(claim)
        now = self._now_ms()

        def beat(conn: Conn) -> bool:
            key = self._owner_key(claim.worker_id)
            conn.execute("UPDATE machina_workers SET heartbeat_ms = %s WHERE worker_id = %s", (now, key))
            return self._still_ours(conn, claim)

        try:
            ours = self._pool.run("heartbeat", beat)
        except QueueUnavailable as exc:
            # The job goes on: if the database stays away past MACHINA_CLAIM_TIMEOUT_MS the claim is
            # recovered elsewhere and complete() says so (ClaimLost).
            log.warning("heartbeat not recorded: %s", exc, extra=fields(job=claim.name))
            return
        if not ours:
            raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")

    # --- results ---------------------------------------------------------------------------------------

    def complete(self, claim: Claim, result: Any = None) -> None:
        self._settle(
            claim, "done", "done", self._envelope(claim.name, claim.attempt, "done", claim.worker_id, result=result)
        )
        log.debug("done", extra=fields(job=claim.name))

    def fail(self, claim: Claim, reason: str, *, retryable: bool = True, result: Any = None) -> str:
        reason = str(reason)[:MAX_REASON]
        due: int | None = None
        if not retryable:
            state, counter = "failed", "failed"
        elif claim.attempt >= claim.max_attempts:
            state, counter = "dlq", "dead_lettered"
        else:
            delay = retry_delay_ms(claim.attempt, claim.retry_min_ms, claim.retry_max_ms, self._rng.uniform)
            due = self._now_ms() + delay
            state, counter = "retry", "retries_scheduled"
        envelope = self._envelope(
            claim.name, claim.attempt, state, claim.worker_id, error=reason, result=result, retry_due_ms=due
        )
        self._settle(claim, state, counter, envelope, due=due)
        log.info("attempt %d failed (%s): %s", claim.attempt, state, reason, extra=fields(job=claim.name))
        return state

    def ask(self, claim: Claim, result: Any = None) -> None:
        self._settle(
            claim, "asked", "asked", self._envelope(claim.name, claim.attempt, "asked", claim.worker_id, result=result)
        )
        log.info("asked: waits in asked/ for an operator's approval", extra=fields(job=claim.name))

    def release(self, claim: Claim) -> None:
        self._settle(claim, "inbox", "released", None)
        log.info("released", extra=fields(job=claim.name))

    def _settle(
        self, claim: Claim, state: str, counter: str, envelope: dict[str, Any] | None, due: int | None = None
    ) -> None:
        """Move the claimed job to ``state`` and record this attempt's result, in one transaction.  When the
        claim was taken away the result is still kept (as the file queue keeps it) and ClaimLost raised."""
        self._held(claim)
        data = _result_json(claim.name, envelope) if envelope is not None else None
        attempt = claim.attempt + 1 if state == "retry" else claim.attempt

        def settle(conn: Conn) -> bool:
            row = conn.execute(
                _SETTLE,
                {
                    "state": state,
                    "attempt": attempt,
                    "due": due,
                    "now": self._now_ms(),
                    "name": claim.name,
                    "current": claim.attempt,
                    "owner": self._owner_key(claim.worker_id),
                    "envelope": data,
                    "instance": self._counter_key(conn),
                    "counter": counter,
                    "notify": state == "inbox",
                },
            ).fetchone()
            return bool(row and row[0])

        moved = self._pool.run(state, settle, transaction=False)  # QueueUnavailable: the claim stays ours
        self._active.discard((claim.name, claim.attempt))
        if not moved:
            raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")

    def _envelope(self, name: str, attempt: int, status: str, worker_id: str | None, **extra: Any) -> dict[str, Any]:
        envelope = {
            "name": name,
            "attempt": attempt,
            "status": status,
            "worker_id": worker_id,
            "finished_ms": self._now_ms(),
        }
        envelope.update({k: v for k, v in extra.items() if v is not None or k == "result"})
        return envelope

    def _put_result(self, conn: Conn, name: str, attempt: int, envelope: dict[str, Any], replace: bool = True) -> None:
        self._put_result_json(conn, name, attempt, _result_json(name, envelope), replace)

    @staticmethod
    def _put_result_json(conn: Conn, name: str, attempt: int, data: str, replace: bool = True) -> None:
        action = "UPDATE SET envelope = EXCLUDED.envelope" if replace else "NOTHING"
        conn.execute(
            "INSERT INTO machina_results (name, attempt, envelope) SELECT %s, %s, %s "  # noqa: S608 (fixed text)
            "WHERE EXISTS (SELECT 1 FROM machina_jobs WHERE name = %s) "  # a purged job keeps no late result
            f"ON CONFLICT (name, attempt) DO {action}",
            (name, attempt, data, name),
        )

    def _still_ours(self, conn: Conn, claim: Claim) -> bool:
        row = conn.execute(
            "SELECT 1 FROM machina_jobs WHERE name = %s AND state = 'processing' AND attempt = %s AND owner_id = %s",
            (claim.name, claim.attempt, self._owner_key(claim.worker_id)),
        ).fetchone()
        return row is not None

    def _held(self, claim: Claim) -> None:
        if claim.worker_id not in self._workers:
            raise ClaimLost(f"{claim.name}: worker {claim.worker_id!r} holds no claims in this process")

    # --- worker ids and recovery -----------------------------------------------------------------------

    def recover(self, worker_id: str | None = None) -> list[str]:
        if worker_id is not None:
            return self._take_over(worker_id)
        return self._sweep()

    def _take_over(self, worker_id: str) -> list[str]:
        """Hold ``worker_id`` (its advisory lock on the session connection) and recover what its previous
        holder had claimed.  WorkerIdInUse while a live process holds it."""
        check_worker_id(worker_id)
        with self._session.lock:
            if worker_id in self._workers:
                return []
            with self._session.using("take over a worker id") as conn:
                self._workers[worker_id] = self._lock_worker(conn, worker_id)
        key, why = self._owner_key(worker_id), f"worker {worker_id} restarted"
        orphans = self._pool.run(
            "recover",
            lambda conn: self._recover_where(conn, "owner_id = %s", (key,), why),
        )
        return orphans

    def _owner_key(self, worker_id: str) -> str:
        """A worker id as the database knows it: qualified by this host's name, so that the same units
        (machina-worker@1, @2 ...) run on every host without their ids colliding."""
        return f"{self._host}/{worker_id}"

    def _lock_worker(self, conn: Conn, worker_id: str) -> int:
        now = self._now_ms()
        worker_id = self._owner_key(worker_id)
        conn.execute(
            "INSERT INTO machina_workers (worker_id) VALUES (%s) ON CONFLICT (worker_id) DO NOTHING", (worker_id,)
        )
        row = conn.execute(
            "SELECT lock_key, host, pid FROM machina_workers WHERE worker_id = %s", (worker_id,)
        ).fetchone()
        assert row is not None
        key, _host, pid = row
        for _ in range(TAKE_OVER_TRIES):  # a sweep recovering the id's old claims holds it for a moment
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
            if got and got[0]:
                break
            time.sleep(TAKE_OVER_PAUSE_S)
        else:
            raise WorkerIdInUse(f"worker id {worker_id!r} is in use by another live process (pid {pid})")
        conn.execute(
            "UPDATE machina_workers SET host = %s, pid = %s, started_ms = %s, heartbeat_ms = %s WHERE worker_id = %s",
            (self._host, os.getpid(), now, now, worker_id),
        )
        return int(key)

    def _check_session(self) -> None:
        """Keep the session alive; after a reconnect (database restart) hold our worker ids again.  An id
        another process took meanwhile is given up (its claims are that process's now)."""
        with self._session.lock:
            if not self._workers:
                return
            try:
                conn, fresh = self._session.connection()
                if not fresh:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                self._session.drop()
                conn, fresh = self._session.connection()
            for worker_id in list(self._workers):
                try:
                    self._lock_worker(conn, worker_id)
                except WorkerIdInUse as exc:
                    log.error("after reconnecting: %s; giving it up", exc)
                    del self._workers[worker_id]
            log.warning("queue database connection re-established; holding %d worker id(s) again", len(self._workers))

    def _sweep(self) -> list[str]:
        """Recover claims of dead owners (no lock held), silent owners and nobody."""
        self._swept_at = time.monotonic()
        cutoff = self._now_ms() - self.config.claim_timeout_ms

        def sweep(conn: Conn) -> list[str]:
            rows = conn.execute(
                """SELECT DISTINCT j.owner_id, w.lock_key, w.heartbeat_ms, w.host, w.pid
                   FROM machina_jobs j LEFT JOIN machina_workers w ON w.worker_id = j.owner_id
                   WHERE j.state = 'processing'"""
            ).fetchall()
            recovered: list[str] = []
            for owner, key, beat, _host, pid in rows:
                who = f"worker {owner} (pid {pid})"
                if key is None:
                    where, args = "owner_id IS NOT DISTINCT FROM %s AND claimed_ms < %s", (owner, cutoff)
                    recovered += self._recover_where(conn, where, args, "claimed by no known worker")
                elif self._owner_dead(conn, int(key)):
                    recovered += self._recover_where(conn, "owner_id = %s", (owner,), f"{who} died")
                elif beat is not None and beat < cutoff:
                    why = f"{who} silent for {self._now_ms() - beat} ms"
                    recovered += self._recover_where(conn, "owner_id = %s", (owner,), why)
            return recovered + self._recover_unknown_claims(conn)

        return self._pool.run("recover", sweep)

    def _recover_unknown_claims(self, conn: Conn) -> list[str]:
        """Claims our own worker ids hold that no caller here knows of: a claim whose reply was lost with
        the connection (it committed, the answer never came).  Nobody will settle them: back to the inbox."""
        owners = [self._owner_key(w) for w in list(self._workers)]
        if not owners:
            return []
        rows = conn.execute(
            "SELECT name, attempt FROM machina_jobs WHERE state = 'processing' AND owner_id = ANY(%s) "
            "AND claimed_ms < %s",
            (owners, self._now_ms() - UNKNOWN_CLAIM_GRACE_MS),
        ).fetchall()
        lost = [name for name, attempt in rows if (name, attempt) not in self._active]
        if not lost:
            return []
        where = "owner_id = ANY(%s) AND name = ANY(%s)"
        return self._recover_where(conn, where, (owners, lost), "its claim's reply was lost with the connection")

    @staticmethod
    def _owner_dead(conn: Conn, key: int) -> bool:
        """True when no session holds the worker id's lock; then this transaction holds it until it ends,
        so the id cannot be taken over (and claim anew) while its old claims are being recovered."""
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
        return bool(got and got[0])

    def _recover_where(self, conn: Conn, where: str, args: tuple[Any, ...], reason: str) -> list[str]:
        rows = conn.execute(
            f"SELECT name, attempt, body FROM machina_jobs WHERE state = 'processing' AND {where} "  # noqa: S608
            "FOR UPDATE SKIP LOCKED",
            args,
        ).fetchall()
        names = []
        for name, attempt, body in rows:
            max_attempts = self.config.max_attempts
            with contextlib.suppress(InvalidRequest):
                max_attempts = load_request(body).settings.max_attempts or max_attempts
            exhausted = attempt >= max_attempts
            status = "dlq" if exhausted else "recovered"
            envelope = self._envelope(name, attempt, status, None, error=f"recovered: {reason}")
            self._put_result(conn, name, attempt, envelope, replace=False)
            conn.execute(
                """UPDATE machina_jobs SET state = %s, attempt = %s, owner_id = NULL, claimed_ms = NULL,
                       state_ms = %s WHERE name = %s""",
                ("dlq" if exhausted else "inbox", attempt if exhausted else attempt + 1, self._now_ms(), name),
            )
            self._count(conn, "dead_lettered" if exhausted else "recovered")
            log.warning("recovered claim to %s/: %s", "dlq" if exhausted else "inbox", reason, extra=fields(job=name))
            names.append(name)
        if names:
            conn.execute(f"NOTIFY {CHANNEL}")
        return names

    # --- maintenance -----------------------------------------------------------------------------------

    def maintain(self) -> None:
        if not self._maintain_lock.acquire(blocking=False):
            return
        try:
            if time.monotonic() - self._swept_at < SWEEP_S:
                return
            self._swept_at = time.monotonic()
            self._duty("check the session connection", self._check_session)
            self._duty("recover orphaned claims", self._sweep)
            self._duty("prune dedup entries", self._prune_dedup)
            self._duty("promote due retries", self._promote)
        finally:
            self._maintain_lock.release()

    def _duty(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except (psycopg.Error, QueueError) as exc:
            log.warning("could not %s: %s (will try again)", what, self.connector.scrub(exc))

    def _prune_dedup(self) -> None:
        if self.config.dedup_ttl_ms > 0:
            cutoff = self._now_ms() - self.config.dedup_ttl_ms
            self._pool.run(
                "prune dedup", lambda conn: conn.execute("DELETE FROM machina_dedup WHERE ts_ms <= %s", (cutoff,))
            )

    def _promote(self) -> None:
        """Due retries to the inbox, with a NOTIFY, so that waiting workers elsewhere wake for them."""
        now = self._now_ms()

        def promote(conn: Conn) -> None:
            n = conn.execute(
                "UPDATE machina_jobs SET state = 'inbox', due_ms = NULL, state_ms = %s "
                "WHERE state = 'retry' AND due_ms <= %s",
                (now, now),
            ).rowcount
            if n:
                self._count(conn, "retries_promoted", n, notify=True)

        self._pool.run("promote retries", promote)

    def start_maintenance(self) -> None:
        """Run :meth:`maintain` every MACHINA_SERVE_SCAN_MS in a background thread (machina-enqueued)."""
        if self._maintenance is not None:
            return
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="machina-queue-maint", daemon=True)
        self._maintenance.start()

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.config.scan_ms / 1000):
            try:
                self.maintain()
            except Exception:
                log.exception("queue maintenance failed; trying again in %d ms", self.config.scan_ms)

    # --- operators -------------------------------------------------------------------------------------

    def requeue(self, name: str) -> str:
        def requeue(conn: Conn) -> str:
            row = self._locked(conn, name)
            state, attempt = row[1], row[2]
            if state in ("dlq", "failed"):
                attempt += 1
            elif state != "retry":
                raise JobNotFound(name, f"is in {state}/: only jobs in dlq/, failed/ or retry/ can be retried")
            conn.execute(
                "UPDATE machina_jobs SET state = 'inbox', attempt = %s, due_ms = NULL, state_ms = %s WHERE name = %s",
                (attempt, self._now_ms(), row[0]),
            )
            self._count(conn, "requeued", notify=True)
            log.info("requeued from %s/ as attempt %d", state, attempt, extra=fields(job=row[0]))
            return _ref(row[0], attempt).file

        return self._pool.run("requeue", requeue)

    def approve(self, name: str, leases: list[dict[str, Any]]) -> str:
        def approve(conn: Conn) -> str:
            row = self._locked(conn, name)
            if row[1] != "asked":
                raise JobNotFound(name, f"is in {row[1]}/: only jobs in asked/ can be approved")
            body = {key: value for key, value in json.loads(row[6]).items() if key != LEASES_KEY}
            if leases:
                body[LEASES_KEY] = leases
            canonical = validate_request(body).canonical.decode("utf-8")
            attempt = row[2] + 1
            conn.execute(
                "UPDATE machina_jobs SET state = 'inbox', attempt = %s, body = %s, state_ms = %s WHERE name = %s",
                (attempt, canonical, self._now_ms(), row[0]),
            )
            self._count(conn, "approved", notify=True)
            log.info(
                "approved with %d lease(s): requeued as attempt %d", len(leases), attempt, extra=fields(job=row[0])
            )
            return _ref(row[0], attempt).file

        return self._pool.run("approve", approve)

    def _locked(self, conn: Conn, name: str) -> tuple[Any, ...]:
        ref = parse_name(name)
        row = None
        if ref is not None:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM machina_jobs WHERE name = %s FOR UPDATE",  # noqa: S608
                (ref.name,),
            ).fetchone()
        if row is None:
            raise JobNotFound(name)
        return tuple(row)

    def purge(self, state: str, older_than_ms: int) -> int:
        if state not in FINAL_STATES:
            raise QueueError(f"purge only removes finished jobs ({', '.join(FINAL_STATES)}), not {state}")
        cutoff = self._now_ms() - older_than_ms

        def purge(conn: Conn) -> int:
            n = conn.execute("DELETE FROM machina_jobs WHERE state = %s AND state_ms <= %s", (state, cutoff)).rowcount
            if n:
                self._count(conn, "purged", n)
            return int(n)

        return self._pool.run("purge", purge)

    def list_jobs(self, state: str) -> list[JobInfo]:
        if state not in STATES:
            raise QueueError(f"unknown state {state!r} (one of {', '.join(STATES)})")
        order = "due_ms, name" if state == "retry" else "name"
        rows = self._pool.run(
            "list jobs",
            lambda conn: conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM machina_jobs WHERE state = %s ORDER BY {order}",  # noqa: S608
                (state,),
            ).fetchall(),
        )
        jobs = []
        for name, _, attempt, priority, enqueued_ms, due_ms, _body, _owner in rows:
            ref = _ref(name, attempt)
            file = ref.retry_file(due_ms) if state == "retry" and due_ms is not None else ref.file
            jobs.append(
                JobInfo(state, name, file, attempt, priority, enqueued_ms, due_ms if state == "retry" else None)
            )
        return jobs

    def job_status(self, name: str, *, with_request: bool = False) -> JobStatus | None:
        ref = parse_name(name)
        if ref is None:
            return None

        def read(conn: Conn) -> tuple[Any, list[Any], Any, bool]:
            row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM machina_jobs WHERE name = %s", (ref.name,)).fetchone()  # noqa: S608
            if row is None:
                return None, [], None, False
            results = conn.execute(
                "SELECT envelope FROM machina_results WHERE name = %s ORDER BY attempt", (ref.name,)
            ).fetchall()
            owner, alive = None, False
            if row[1] == "processing" and row[7] is not None:
                owner = conn.execute(
                    "SELECT worker_id, host, pid, started_ms, heartbeat_ms, lock_key FROM machina_workers "
                    "WHERE worker_id = %s",
                    (row[7],),
                ).fetchone()
                if owner is not None:
                    live = {int(r[0]) for r in conn.execute(_LIVE_LOCKS, (LOCK_CLASS,)).fetchall()}
                    alive = int(owner[5]) in live
            return row, results, owner, alive

        row, results, owner, alive = self._pool.run("job status", read)
        if row is None:
            return None
        jname, state, attempt, priority, enqueued_ms, due_ms, body, _ = row
        current = _ref(jname, attempt)
        file = current.retry_file(due_ms) if state == "retry" and due_ms is not None else current.file
        status = JobStatus(jname, state, file, attempt, priority, enqueued_ms, due_ms if state == "retry" else None)
        status.results = [_parse_result(attempt_row[0]) for attempt_row in results]
        if owner is not None:
            keys = ("worker_id", "host", "pid", "started_ms", "heartbeat_ms")
            status.owner = {**dict(zip(keys, owner[:5], strict=True)), "alive": alive}
            status.owner["worker_id"] = str(owner[0]).split("/", 1)[-1]  # the host is shown apart
        if with_request:
            parsed = json.loads(body)
            status.request = without_tokens(parsed) if isinstance(parsed, dict) else parsed
        return status

    def stats(self) -> QueueStats:
        now = time.monotonic()
        cached = self._stats_cache
        if cached is not None and now - cached[0] < STATS_MAX_AGE_S:
            return cached[1]

        def read(conn: Conn) -> tuple[list[Any], list[Any]]:
            sizes = conn.execute("SELECT state, count(*) FROM machina_jobs GROUP BY state").fetchall()
            counts = conn.execute("SELECT counter, sum(value) FROM machina_counters GROUP BY counter").fetchall()
            return sizes, counts

        size_rows, count_rows = self._pool.run("stats", read)
        sizes = dict.fromkeys(STATES, 0)
        sizes.update({state: int(n) for state, n in size_rows})
        counters = dict.fromkeys(COUNTERS, 0)
        counters.update({counter: int(n) for counter, n in count_rows if counter in counters})
        result = QueueStats(sizes, counters)
        self._stats_cache = (now, result)
        return result

    # --- plumbing --------------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        if self._maintenance is not None and self._maintenance is not threading.current_thread():
            self._maintenance.join(timeout=5)
        with self._session.lock:
            self._session.drop()  # lets go of the worker ids, as a dying process would
            self._workers.clear()
        self._pool.close()

    def _counter_key(self, conn: Conn) -> str:
        return f"{self._instance}:{conn.info.backend_pid}"

    def _count(self, conn: Conn, counter: str, n: int = 1, *, notify: bool = False) -> None:
        """Add ``n`` to a counter and, with ``notify``, wake waiting workers at the commit: one round trip.
        One row per (process, connection): concurrent transactions never queue on a shared counter row."""
        conn.execute(
            _NOTIFY_AND_COUNT if notify else _COUNT,
            (self._counter_key(conn), counter, n),
        )

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)


def migrate_database(url: str, password: str | None = None) -> tuple[int, int]:
    """Create or upgrade the queue's tables at ``url`` (``machina queue migrate``); returns the schema
    version before and after.  Idempotent, and safe to run from several hosts at once."""
    connector = Connector(url, password, fsync=True, application="machina-migrate")
    with connector.connect(autocommit=True) as conn:
        try:
            before = current_version(conn)
            migrate(conn)
            return before, current_version(conn)
        except psycopg.OperationalError as exc:
            raise QueueUnavailable("migrate", connector.scrub(exc)) from None
        except psycopg.Error as exc:  # no right to create tables, say
            raise QueueError(f"migrate the queue database: {connector.scrub(exc)}") from None


def _ref(name: str, attempt: int) -> JobRef:
    ref = parse_name(name)
    if ref is None:  # only names we made are in the table
        raise QueueError(f"{name!r} in the queue database is not a job name")
    return ref.with_attempt(attempt)


def _result_json(name: str, envelope: dict[str, Any] | None) -> str:
    try:
        return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise QueueError(f"result of {name} is not JSON: {exc}") from None


def _parse_result(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return {"status": "unreadable", "error": str(exc)}
    return parsed if isinstance(parsed, dict) else {"status": "unreadable", "error": "not an object"}

"""The filesystem queue: :class:`FileQueue`, the one implementation of :class:`~machina.queue.base.BaseQueue`.

Every state change is one ``rename`` between the state directories of ``$MACHINA_ROOT/queue``; file names
are those of :mod:`machina.queue.names`.  See the package docstring for the whole design.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn

from machina.approvals import LEASES_KEY, without_tokens
from machina.backoff import retry_delay_ms
from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir
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
from machina.queue.claims import ClaimRegistry, clear_claims, foreign_registry, list_registries
from machina.queue.dedup import DedupTable
from machina.queue.durable import GroupCommit, create_new, place, syncfs
from machina.queue.errors import (
    ClaimLost,
    DedupConflict,
    InvalidRequest,
    JobNotFound,
    QueuedNotDurable,
    QueueError,
    QueueNotWritable,
    is_not_writable,
)
from machina.queue.faults import point as fault_point
from machina.queue.inbox import InboxIndex
from machina.queue.names import (
    DEFAULT_PRIORITY,
    MAX_ATTEMPT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    JobRef,
    is_candidate,
    new_ref,
    parse_file,
    parse_name,
    parse_retry,
)
from machina.queue.rebuild import rebuild_missing
from machina.queue.request import Request, load_request, validate_request
from machina.queue.wal import WalWriter, encode_job
from machina.queue.walindex import DedupEntry, VerifyReport, WalIndex
from machina.root import Root

log = logging.getLogger(__name__)

#: How often a process looks for claims of dead or silent owners (seconds).
RECOVERY_SWEEP_S = 1.0
#: How often maintain() forgets expired dedup entries (seconds).
DEDUP_PRUNE_S = 1.0
#: Stale temporary files of live-looking pids are removed after this long (seconds).
TMP_MAX_AGE_S = 24 * 3600
#: stats() answers from a cache this young (seconds): /metrics scrapes must not rescan 100k files each.
STATS_MAX_AGE_S = 0.5
#: Job names per PURGE record (a purge of 100k jobs writes records of a readable size).
PURGE_RECORD_NAMES = 500
#: Longest failure reason kept in a result file.
MAX_REASON = 4000

#: WAL record type -> stats counter name.
COUNTER_NAMES = {
    "ENQ": "enqueued",
    "UNENQ": "enqueues_taken_back",
    "DEDUP": "deduplicated",
    "CLAIM": "claimed",
    "RELEASE": "released",
    "SCHED": "retries_scheduled",
    "PROMOTE": "retries_promoted",
    "RECOVER": "recovered",
    "DONE": "done",
    "ASK": "asked",
    "APPROVE": "approved",
    "RETRY": "requeued",
    "DLQ": "dead_lettered",
    "FAIL": "failed",
    "PURGE": "purged",
    "TRUNC": "wal_truncations",
    "CKPT_BAD": "checkpoints_corrupt",
}


class FileQueue(BaseQueue):
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
        self.root = root if isinstance(root, Root) else Root(root)
        self.config = config or QueueConfig()
        self.clock = clock
        self._rng = rng or random.Random(secrets.randbits(64))  # noqa: S311 (jitter and name spread, not secrets)
        self.dirs = {state: self.root.queue_dir(state) for state in (*STATES, "out", "tmp")}
        for path in self.dirs.values():
            ensure_dir(path)
        self.claims_dir = os.path.join(self.root.state, "claims")
        cfg = self.config
        self._writer = (
            WalWriter(self.root.wal, crc=cfg.wal_crc32, fsync=cfg.fsync, clock=clock) if cfg.wal_enable else None
        )
        self._index = (
            WalIndex(self.root.wal, clock=clock, ttl_ms=cfg.dedup_ttl_ms, fsync=cfg.fsync, writer=self._writer)
            if self._writer is not None
            else None
        )
        if self._index is not None:
            self._index.rebuild = lambda records, cancelled: rebuild_missing(records, self.dirs, cancelled)
            self._index.sync_files = self._sync_files
        self._dedup = DedupTable(cfg.dedup_ttl_ms, self._index, refresh_s=cfg.scan_ms / 1000)
        self._commit = GroupCommit(self._writer.sync if self._writer is not None else None)
        self._inbox = InboxIndex(self.dirs["inbox"], self.dirs["retry"], cfg.scan_ms / 1000)
        self._registries: dict[str, ClaimRegistry] = {}
        self._registry_lock = threading.Lock()
        self._name_lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._maintain_lock = threading.Lock()
        self._retry_next_due: int | None = None
        self._retry_scanned_at = float("-inf")
        self._swept_at = float("-inf")
        self._pruned_at = float("-inf")
        self._checkpoint_checked_at = clock.monotonic()
        self._stats_cache: tuple[float, QueueStats] | None = None
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._clean_tmp()
        _OPEN_QUEUES.add(self)

    # --- enqueue ---------------------------------------------------------------------------------------

    def enqueue(
        self, request: dict[str, Any] | Request, request_id: str | None = None, priority: int | None = None
    ) -> EnqueueResult:
        req = self._as_request(request, request_id)
        prio = self._priority(req, priority)
        rid = req.request_id
        reservation = None
        if rid is not None and self._dedup.enabled:
            found = self._dedup.begin(rid, req.sha256, self._now_ms())
            if isinstance(found, DedupEntry):
                return self._answer_repeat(rid, req, found)
            reservation = found
        try:
            if self._writer is not None:
                ref = self._commit_job(req, prio)
            else:
                ref = self._write_job(req, prio)
                self._sync_placed(ref, rid)
        except QueuedNotDurable as exc:
            placed = parse_name(exc.name)
            if reservation is not None and placed is not None:
                # The job is in the queue after all: a repeat must point at it.
                self._dedup.finish(rid, reservation, placed.name, placed.epoch_ms)  # type: ignore[arg-type]
            raise
        except BaseException:
            if reservation is not None:
                self._dedup.abort(rid, reservation)  # type: ignore[arg-type]
            raise
        if reservation is not None:
            self._dedup.finish(rid, reservation, ref.name, ref.epoch_ms)  # type: ignore[arg-type]
        self._inbox.push(ref.file)
        log.debug("enqueued", extra=fields(job=ref.name, request_id=rid))
        return EnqueueResult(ref.name, rid, False)

    def _commit_job(self, req: Request, priority: int) -> JobRef:
        """The WAL is the commit point: the ENQ record, body included, is appended and group-committed (one
        fdatasync for every enqueuer waiting), then the inbox file is written without an fsync of its own.
        A crash after the sync leaves a record whose file :mod:`machina.queue.rebuild` places again; the
        checkpoint syncs the files before it lets the records go (DESIGN.md section 3)."""
        assert self._writer is not None
        ref = self._new_ref(priority, req.request_id)
        record: dict[str, Any] = {"t": "ENQ", "ts": ref.epoch_ms, "name": ref.name, "prio": priority}
        if req.request_id is not None:
            record.update(rid=req.request_id, sha=req.sha256)
        try:
            segment = self._writer.commit_append(encode_job(record, req.canonical, self.config.wal_crc32))
        except OSError as exc:
            self._reraise("log job", exc)
        self._count("ENQ")
        try:
            fault_point("enqueue.logged")
            try:
                fault_point("enqueue.sync")
                if self.config.fsync:
                    self._commit.sync()
            except OSError as exc:
                self._cancel_enqueue(ref, req.request_id)
                self._reraise("fsync", exc)
            fault_point("enqueue.committed")
            self._place_job(ref, req.canonical, req.request_id)
        finally:
            self._writer.release(segment)
        return ref

    def _place_job(self, ref: JobRef, data: bytes, rid: str | None) -> None:
        """The inbox file of a committed job: written in tmp/ and moved in (never replacing), no fsync."""
        tmp = self._write_tmp(data, "write job", durable=False)
        fault_point("enqueue.tmp_written")
        try:
            place(tmp, os.path.join(self.dirs["inbox"], ref.file))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            # The record is committed but cannot be placed: it must not be placed later by a rebuild either.
            self._cancel_enqueue(ref, rid)
            if isinstance(exc, FileExistsError):
                raise QueueError(f"job name {ref.name} drawn twice; nothing was queued, try again") from None
            if isinstance(exc, OSError):
                self._reraise("place job", exc)
            raise
        fault_point("enqueue.placed")

    def _cancel_enqueue(self, ref: JobRef, rid: str | None) -> None:
        """An ENQ record whose job is not acknowledged: UNENQ keeps it from answering a repeat of the request
        and from being placed by a rebuild."""
        record: dict[str, Any] = {"name": ref.name}
        if rid is not None:
            record["rid"] = rid
        self._log("UNENQ", **record)
        log.warning("job %s not queued: it could not be made durable", ref.name, extra=fields(job=ref.name))

    def _sync_placed(self, ref: JobRef, rid: str | None) -> None:
        """Without the WAL: the placed file's directory is fsynced; a failure takes the job back if it can."""
        self._count("ENQ")
        fault_point("enqueue.logged")
        try:
            fault_point("enqueue.sync")
            self._sync("inbox")
        except (QueueNotWritable, OSError) as exc:
            if self._take_back(ref, rid):
                if isinstance(exc, OSError):
                    self._reraise("fsync", exc)
                raise  # nothing was queued: the answer "not writable" is true
            raise QueuedNotDurable(ref.name, exc) from exc

    def _take_back(self, ref: JobRef, rid: str | None) -> bool:
        """Undo the placement of a job whose fsync failed; False when it is beyond recall (claimed already)."""
        try:
            os.unlink(os.path.join(self.dirs["inbox"], ref.file))
        except OSError as exc:
            log.error("job %s placed but not durable, and it cannot be taken back: %s", ref.name, exc)
            return False
        record: dict[str, Any] = {"name": ref.name}
        if rid is not None:
            record["rid"] = rid
        self._log("UNENQ", **record)  # the ENQ record before it must not answer a repeat of the request
        log.warning("job %s taken back: its fsync failed", ref.name, extra=fields(job=ref.name))
        return True

    def _as_request(self, request: dict[str, Any] | Request, request_id: str | None) -> Request:
        if isinstance(request, Request):
            if request_id is not None and request_id != request.request_id:
                raise InvalidRequest("request_id given twice with different values")
            return request
        return validate_request(request, request_id=request_id)

    def _priority(self, req: Request, priority: int | None) -> int:
        if priority is None:
            priority = req.settings.priority if req.settings.priority is not None else DEFAULT_PRIORITY
        if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidRequest(f"priority must be an integer in {PRIORITY_MIN}..{PRIORITY_MAX}")
        return priority

    def _answer_repeat(self, rid: str, req: Request, entry: DedupEntry) -> EnqueueResult:
        if not secrets.compare_digest(entry.sha256, req.sha256):
            raise DedupConflict(rid, entry.name)
        self._log("DEDUP", rid=rid, name=entry.name)
        log.debug("deduplicated", extra=fields(job=entry.name, request_id=rid))
        return EnqueueResult(entry.name, rid, True)

    def _write_job(self, req: Request, priority: int) -> JobRef:
        tmp = self._write_tmp(req.canonical, "write job")
        fault_point("enqueue.tmp_written")
        try:
            for _ in range(16):
                ref = self._new_ref(priority, req.request_id)
                try:
                    place(tmp, os.path.join(self.dirs["inbox"], ref.file))
                except FileExistsError:
                    continue  # two enqueuers drew the same name: draw again, never replace
                fault_point("enqueue.placed")
                return ref
            raise QueueError("could not find a free job name after 16 tries")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                self._reraise("place job", exc)
            raise

    def _new_ref(self, priority: int, request_id: str | None) -> JobRef:
        with self._name_lock:
            ms = max(int(self.clock.time() * 1000), self._last_ms)
            if ms == self._last_ms:
                self._seq += 1
                if self._seq > 0xFFFF:
                    ms, self._seq = ms + 1, 0
            else:
                self._seq = 0
            self._last_ms = ms
            seq = self._seq
        return new_ref(priority, ms, seq, self._rng.getrandbits(24), request_id)

    # --- claim -----------------------------------------------------------------------------------------

    def claim(self, worker_id: str, timeout: float = 0.0) -> Claim | None:
        registry, _ = self._take_over(worker_id)
        self._inbox.start_watching()
        # The wait is a kernel wait on a condition: real time by nature, so its deadline is on the real clock.
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self.maintain()
            claimed = self._claim_next(registry)
            if claimed is not None:
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return None
            self._inbox.wait(min(remaining, self._wait_hint()))

    def _claim_next(self, registry: ClaimRegistry) -> Claim | None:
        while True:
            file = self._inbox.pop()
            if file is None:
                return None
            ref = parse_file(file)
            if ref is None:
                self._adopt(file)
                continue
            try:
                registry.add(file)
                fault_point("claim.intent")
                os.rename(os.path.join(self.dirs["inbox"], file), os.path.join(self.dirs["processing"], file))
            except FileNotFoundError:
                registry.remove(file)  # another worker was faster
                continue
            except OSError as exc:
                registry.remove(file)
                self._inbox.push(file)
                self._reraise("claim", exc)
            fault_point("claim.moved")
            self._log("CLAIM", file=file, w=registry.worker_id)
            claimed = self._open_claim(registry, ref)
            if claimed is not None:
                return claimed

    def _open_claim(self, registry: ClaimRegistry, ref: JobRef) -> Claim | None:
        path = os.path.join(self.dirs["processing"], ref.file)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            req = load_request(data)
        except FileNotFoundError:
            registry.remove(ref.file)
            return None
        except (InvalidRequest, OSError) as exc:
            reason = exc.reason if isinstance(exc, InvalidRequest) else f"unreadable: {exc}"
            self._finish_invalid(registry, ref, reason)
            return None
        s = req.settings
        return Claim(
            name=ref.name,
            file=ref.file,
            attempt=ref.attempt,
            request=req.body,
            request_id=req.request_id,
            priority=ref.priority,
            enqueued_ms=ref.epoch_ms,
            max_attempts=s.max_attempts or self.config.max_attempts,
            retry_min_ms=s.retry_min_ms if s.retry_min_ms is not None else self.config.retry_min_ms,
            retry_max_ms=s.retry_max_ms if s.retry_max_ms is not None else self.config.retry_max_ms,
            worker_id=registry.worker_id,
            claimed_ms=self._now_ms(),
        )

    def _finish_invalid(self, registry: ClaimRegistry, ref: JobRef, reason: str) -> None:
        log.warning("invalid request moved to failed/: %s", reason, extra=fields(job=ref.name))
        self._write_result(ref, self._envelope(ref, "failed", registry.worker_id, error=reason))
        self.transition(
            "processing",
            ref.file,
            "failed",
            ref.file,
            "FAIL",
            file=ref.file,
            w=registry.worker_id,
            reason="invalid request",
        )
        registry.remove(ref.file)

    def _adopt(self, file: str) -> None:
        """A file dropped into inbox/ by hand under another name becomes a job with a proper name."""
        src = os.path.join(self.dirs["inbox"], file)
        try:
            if not os.path.isfile(src) or os.path.islink(src):
                return
            ref = self._new_ref(DEFAULT_PRIORITY, None)
            place(src, os.path.join(self.dirs["inbox"], ref.file))
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot adopt inbox/%s: %s", file, exc)
            return
        log.info("adopted inbox/%s as %s", file, ref.name, extra=fields(job=ref.name))
        self._log("ENQ", ts=ref.epoch_ms, name=ref.name, prio=ref.priority, adopted=file)
        self._inbox.push(ref.file)

    def heartbeat(self, claim: Claim) -> None:
        registry = self._registry_for(claim)
        if not os.path.exists(os.path.join(self.dirs["processing"], claim.file)):
            registry.remove(claim.file)
            raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")
        registry.heartbeat()

    # --- results ---------------------------------------------------------------------------------------

    def complete(self, claim: Claim, result: Any = None) -> None:
        registry = self._registry_for(claim)
        ref = self._ref_of(claim)
        self._write_result(ref, self._envelope(ref, "done", claim.worker_id, result=result))
        fault_point("complete.result")
        if self._writer is None:
            self._finish(registry, claim, "done", claim.file, "DONE")
        else:
            # The DONE record is the commit point; the move follows.  A crash between them leaves the job in
            # processing/ with a result that says done: recovery then finishes the move, never reruns it.
            self._log("DONE", file=claim.file, w=claim.worker_id)
            self._sync_wal()
            fault_point("complete.logged")
            moved = self._move("processing", claim.file, "done", claim.file)
            registry.remove(claim.file)
            if not moved:
                raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")
        fault_point("complete.moved")
        log.debug("done", extra=fields(job=claim.name))

    def fail(self, claim: Claim, reason: str, *, retryable: bool = True, result: Any = None) -> str:
        registry = self._registry_for(claim)
        ref = self._ref_of(claim)
        reason = str(reason)[:MAX_REASON]
        due: int | None = None
        if not retryable:
            state, kind, target = "failed", "FAIL", claim.file
        elif claim.attempt >= claim.max_attempts:
            state, kind, target = "dlq", "DLQ", claim.file
        else:
            delay = retry_delay_ms(claim.attempt, claim.retry_min_ms, claim.retry_max_ms, self._rng.uniform)
            due = self._now_ms() + delay
            state, kind, target = "retry", "SCHED", ref.next_attempt().retry_file(due)
        envelope = self._envelope(ref, state, claim.worker_id, error=reason, result=result, retry_due_ms=due)
        self._write_result(ref, envelope)
        fault_point("fail.result")
        self._finish(registry, claim, state, target, kind, due=due)
        if due is not None:
            self._note_retry(due)
        log.info("attempt %d failed (%s): %s", claim.attempt, state, reason, extra=fields(job=claim.name))
        return state

    def ask(self, claim: Claim, result: Any = None) -> None:
        registry = self._registry_for(claim)
        ref = self._ref_of(claim)
        self._write_result(ref, self._envelope(ref, "asked", claim.worker_id, result=result))
        self._finish(registry, claim, "asked", claim.file, "ASK")
        log.info("asked: waits in asked/ for an operator's approval", extra=fields(job=claim.name))

    def release(self, claim: Claim) -> None:
        registry = self._registry_for(claim)
        self._finish(registry, claim, "inbox", claim.file, "RELEASE")
        self._inbox.push(claim.file)
        log.info("released", extra=fields(job=claim.name))

    def _finish(
        self, registry: ClaimRegistry, claim: Claim, state: str, target: str, kind: str, due: int | None = None
    ) -> None:
        record: dict[str, Any] = {"file": claim.file, "w": claim.worker_id}
        if due is not None:
            record["due"] = due
        moved = self.transition("processing", claim.file, state, target, kind, **record)
        registry.remove(claim.file)
        if not moved:
            raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")

    def _envelope(self, ref: JobRef, status: str, worker_id: str | None, **extra: Any) -> dict[str, Any]:
        envelope = {
            "name": ref.name,
            "attempt": ref.attempt,
            "status": status,
            "worker_id": worker_id,
            "finished_ms": self._now_ms(),
        }
        envelope.update({k: v for k, v in extra.items() if v is not None or k == "result"})
        return envelope

    def _write_result(self, ref: JobRef, envelope: dict[str, Any], replace: bool = True) -> bool:
        try:
            data = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise QueueError(f"result of {ref.name} is not JSON: {exc}") from None
        tmp = self._write_tmp(data, "write result", durable=self._writer is None)
        dst = os.path.join(self.dirs["out"], ref.result_file())
        try:
            if replace:
                os.rename(tmp, dst)
            else:
                place(tmp, dst)
        except FileExistsError:
            os.unlink(tmp)
            return False
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._reraise("write result", exc)
        return True

    # --- recovery --------------------------------------------------------------------------------------

    def recover(self, worker_id: str | None = None) -> list[str]:
        if worker_id is not None:
            return self._take_over(worker_id)[1]
        return self._sweep()

    def _take_over(self, worker_id: str) -> tuple[ClaimRegistry, list[str]]:
        with self._registry_lock:
            registry = self._registries.get(worker_id)
            if registry is not None:
                return registry, []
            try:
                registry = ClaimRegistry(self.claims_dir, worker_id, self.clock)
            except OSError as exc:
                self._reraise("open the claim registry", exc)
            self._registries[worker_id] = registry
        recovered: list[str] = []
        for file in registry.orphans:
            recovered += self._recover_file(file, f"worker {worker_id} restarted")
        return registry, recovered

    def _sweep(self) -> list[str]:
        """Recover claims of dead owners, silent owners and nobody."""
        self._swept_at = self.clock.monotonic()
        listed: set[str] = set()
        recovered: list[str] = []
        with self._registry_lock:
            ours = {r.path: r for r in self._registries.values()}
        for path in list_registries(self.claims_dir):
            if path in ours:
                listed.update(ours[path].owner.claims)
                continue
            try:
                with foreign_registry(path) as (owner, dead, fd):
                    if owner is None:
                        continue
                    listed.update(owner.claims)
                    if dead and owner.claims:
                        why = f"worker {owner.worker_id} (pid {owner.pid}) died"
                        for file in owner.claims:
                            recovered += self._recover_file(file, why)
                        clear_claims(fd, owner)
                    elif not dead and (silent := owner.silent_ms(self.clock)) > self.config.claim_timeout_ms:
                        why = f"worker {owner.worker_id} (pid {owner.pid}) silent for {silent} ms"
                        for file in owner.claims:
                            recovered += self._recover_file(file, why)
            except FileNotFoundError:
                continue
        recovered += self._sweep_ownerless(listed)
        if self._index is not None and self._index.needs_settling():
            self._index.settle()  # a writer died: place the files of the jobs it had committed
        return recovered

    def _sweep_ownerless(self, listed: set[str]) -> list[str]:
        """Claims no registry lists (a registry deleted by hand): recovered once as old as the claim timeout."""
        recovered: list[str] = []
        cutoff = self.clock.time() - self.config.claim_timeout_ms / 1000
        with os.scandir(self.dirs["processing"]) as entries:
            for entry in entries:
                if entry.name in listed or not is_candidate(entry.name):
                    continue
                try:
                    if entry.stat().st_ctime < cutoff:
                        recovered += self._recover_file(entry.name, "claimed by no known worker")
                except FileNotFoundError:
                    continue
        return recovered

    def _recover_file(self, file: str, reason: str) -> list[str]:
        ref = parse_file(file)
        path = os.path.join(self.dirs["processing"], file)
        if ref is None:
            return []
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        if self._finished_as_done(ref):
            # It ran and its completion was recorded; only the move to done/ was lost (a crash between them).
            if self.transition("processing", file, "done", file, "DONE", file=file, w=None, reason=reason):
                log.warning("claim (%s) had completed: moved to done/ (%s)", file, reason, extra=fields(job=ref.name))
                return [ref.name]
            return []
        max_attempts = self.config.max_attempts
        with contextlib.suppress(InvalidRequest):
            max_attempts = load_request(data).settings.max_attempts or max_attempts
        exhausted = ref.attempt >= max_attempts
        status = "dlq" if exhausted else "recovered"
        self._write_result(ref, self._envelope(ref, status, None, error=f"recovered: {reason}"), replace=False)
        fault_point("recover.result")
        state, target, kind = ("dlq", file, "DLQ") if exhausted else ("inbox", ref.next_attempt().file, "RECOVER")
        if not self.transition("processing", file, state, target, kind, file=file, to=target, reason=reason):
            return []
        if state == "inbox":
            self._inbox.push(target)
        log.warning("recovered claim (%s) to %s/: %s", file, state, reason, extra=fields(job=ref.name))
        return [ref.name]

    def _finished_as_done(self, ref: JobRef) -> bool:
        """True when this attempt's result in out/ says done (complete() got as far as writing it)."""
        try:
            with open(os.path.join(self.dirs["out"], ref.result_file()), "rb") as handle:
                envelope = json.loads(handle.read())
        except (OSError, ValueError):
            return False
        return isinstance(envelope, dict) and envelope.get("status") == "done"

    # --- maintenance -----------------------------------------------------------------------------------

    def maintain(self) -> None:
        if not self._maintain_lock.acquire(blocking=False):
            return
        try:
            now = self.clock.monotonic()
            self._duty("promote due retries", self._promote_due)
            if now - self._swept_at >= RECOVERY_SWEEP_S:
                self._duty("recover orphaned claims", self._sweep)
            if now - self._pruned_at >= DEDUP_PRUNE_S:
                # Always, not only with a checkpoint: with MACHINA_WAL_ENABLE=0 nothing else forgets an id.
                self._pruned_at = now
                self._duty("prune dedup entries", lambda: self._dedup.prune(self._now_ms()))
            if self._index is not None and now - self._checkpoint_checked_at >= self.config.checkpoint_ms / 1000:
                self._checkpoint_checked_at = now
                self._duty("checkpoint the WAL", self._checkpoint_if_due)
        finally:
            self._maintain_lock.release()

    def _duty(self, what: str, step: Callable[[], object]) -> None:
        """One maintenance step; its failure (a full disk, say) is logged and must not fail a claim."""
        try:
            step()
        except (OSError, QueueError) as exc:
            log.warning("could not %s: %s (will try again)", what, exc)

    def _checkpoint_if_due(self) -> None:
        if self._writer is not None:
            self._writer.check()
        if self._index is not None and self._index.checkpoint_due(self.config.checkpoint_ms):
            self.checkpoint()

    def start_maintenance(self) -> None:
        """Run :meth:`maintain` every MACHINA_SERVE_SCAN_MS in a background thread (for machina-enqueued,
        which claims nothing itself) after replaying the WAL.  Stopped by :meth:`close`."""
        if self._maintenance is not None:
            return
        self.replay()
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="machina-queue-maint", daemon=True)
        self._maintenance.start()

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.config.scan_ms / 1000):
            try:
                self.maintain()
            except Exception:
                log.exception("queue maintenance failed; trying again in %d ms", self.config.scan_ms)

    def replay(self) -> None:
        """Load the checkpoint and the WAL now (cutting torn tails of dead writers' segments); otherwise this
        happens on first need (dedup, stats, checkpoint)."""
        if self._index is not None:
            self._index.refresh(repair=True)
            self._index.settle()

    def _sync_files(self) -> None:
        """Everything written to the queue's file system so far, on disk: before a checkpoint lets go of the
        WAL records that stood for files written without their own fsync."""
        if not self.config.fsync:
            return
        try:
            syncfs(self.root.queue_dir("inbox"))
        except OSError as exc:
            self._reraise("sync the queue's file system", exc)

    def checkpoint(self) -> bool:
        """Write a WAL checkpoint now; False when WAL is off or another process is writing one."""
        if self._index is None:
            return False
        done = self._index.checkpoint()
        self._dedup.prune(self._now_ms())
        return done

    def verify_wal(self) -> VerifyReport:
        index = self._index or WalIndex(
            self.root.wal, clock=self.clock, ttl_ms=self.config.dedup_ttl_ms, fsync=False, writer=None
        )
        return index.verify()

    def _promote_due(self) -> None:
        now_ms = self._now_ms()
        due_known = self._retry_next_due is not None and now_ms >= self._retry_next_due
        stale = self.clock.monotonic() - self._retry_scanned_at >= self._inbox.scan_s and not self._inbox.watching
        if not (self._inbox.retry_changed or due_known or stale):
            return
        self._inbox.retry_changed = False
        self._retry_scanned_at = self.clock.monotonic()
        next_due: int | None = None
        promoted = 0
        with os.scandir(self.dirs["retry"]) as entries:
            for entry in entries:
                parsed = parse_retry(entry.name)
                if parsed is None:
                    continue
                due, ref = parsed
                if due > now_ms:
                    next_due = due if next_due is None else min(next_due, due)
                elif self.transition("retry", entry.name, "inbox", ref.file, "PROMOTE", sync=False, file=ref.file):
                    self._inbox.push(ref.file)
                    promoted += 1
        self._retry_next_due = next_due
        if promoted:
            self._sync_after("retry", "inbox")

    def _note_retry(self, due: int) -> None:
        if self._retry_next_due is None or due < self._retry_next_due:
            self._retry_next_due = due

    def _wait_hint(self) -> float:
        hint = self._inbox.scan_s
        if self._retry_next_due is not None:
            hint = min(hint, max(0.0, (self._retry_next_due - self._now_ms()) / 1000))
        return hint

    # --- operators -------------------------------------------------------------------------------------

    def requeue(self, name: str) -> str:
        status = self.job_status(name)
        if status is None:
            raise JobNotFound(name)
        ref = self._ref_from_status(status)
        if status.state in ("dlq", "failed"):
            target = ref.next_attempt().file
        elif status.state == "retry":
            target = ref.file
        else:
            raise JobNotFound(name, f"is in {status.state}/: only jobs in dlq/, failed/ or retry/ can be retried")
        if not self.transition(
            status.state, status.file, "inbox", target, "RETRY", at_once=True, file=status.file, to=target
        ):
            raise JobNotFound(name, "moved while being retried")
        self._inbox.push(target)
        log.info("requeued from %s/ as %s", status.state, target, extra=fields(job=status.name))
        return target

    def approve(self, name: str, leases: list[dict[str, Any]]) -> str:
        status = self.job_status(name)
        if status is None:
            raise JobNotFound(name)
        if status.state != "asked":
            raise JobNotFound(name, f"is in {status.state}/: only jobs in asked/ can be approved")
        ref = self._ref_from_status(status)
        self._carry_leases(status.file, leases)
        target = ref.next_attempt().file
        if not self.transition(
            "asked",
            status.file,
            "inbox",
            target,
            "APPROVE",
            at_once=True,
            file=status.file,
            to=target,
            n_leases=len(leases),
        ):
            raise JobNotFound(name, "moved while being approved")
        self._inbox.push(target)
        log.info("approved with %d lease(s): requeued as %s", len(leases), target, extra=fields(job=status.name))
        return target

    def _carry_leases(self, file: str, leases: list[dict[str, Any]]) -> None:
        """Rewrite the job in asked/ with ``leases`` as its ``_leases`` (one atomic replace: a crash before
        the move to the inbox leaves it in asked/, to be approved again)."""
        path = os.path.join(self.dirs["asked"], file)
        try:
            with open(path, "rb") as handle:
                body = load_request(handle.read()).body
        except FileNotFoundError:
            raise JobNotFound(file, "moved while being approved") from None
        except OSError as exc:
            self._reraise("read the asked job", exc)
        body = {key: value for key, value in body.items() if key != LEASES_KEY}
        if leases:
            body[LEASES_KEY] = leases
        tmp = self._write_tmp(validate_request(body).canonical, "write the approved job")
        try:
            os.rename(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._reraise("write the approved job", exc)

    def purge(self, state: str, older_than_ms: int) -> int:
        if state not in FINAL_STATES:
            raise QueueError(f"purge only removes finished jobs ({', '.join(FINAL_STATES)}), not {state}")
        cutoff = self.clock.time() - older_than_ms / 1000
        chosen: list[tuple[str, JobRef]] = []
        with os.scandir(self.dirs[state]) as entries:
            for entry in entries:
                ref = parse_file(entry.name)
                with contextlib.suppress(FileNotFoundError):
                    if ref is not None and entry.stat().st_ctime <= cutoff:
                        chosen.append((entry.path, ref))
        # Logged (and synced) before anything is removed: a rebuild after a crash must not bring back a job
        # whose ENQ record is not yet durable but whose files were purged.
        for start in range(0, len(chosen), PURGE_RECORD_NAMES):
            names = [ref.name for _, ref in chosen[start : start + PURGE_RECORD_NAMES]]
            self._log("PURGE", state=state, n=len(names), names=names)
        if chosen:
            self._sync(state, "out")
        for path, ref in chosen:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            for attempt in range(1, ref.attempt + 1):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dirs["out"], ref.result_file(attempt)))
        if chosen:
            self._sync(state, "out")
        return len(chosen)

    def list_jobs(self, state: str) -> list[JobInfo]:
        if state not in STATES:
            raise QueueError(f"unknown state {state!r} (one of {', '.join(STATES)})")
        jobs: list[JobInfo] = []
        with os.scandir(self.dirs[state]) as entries:
            names = [e.name for e in entries]
        for file in names:
            if state == "retry":
                parsed = parse_retry(file)
                if parsed is not None:
                    due, ref = parsed
                    jobs.append(JobInfo(state, ref.name, file, ref.attempt, ref.priority, ref.epoch_ms, due))
            else:
                found = parse_file(file)
                if found is not None:
                    jobs.append(JobInfo(state, found.name, file, found.attempt, found.priority, found.epoch_ms))
        jobs.sort(key=lambda j: (j.due_ms or 0, j.file))
        return jobs

    def job_status(self, name: str, *, with_request: bool = False) -> JobStatus | None:
        ref = parse_name(name)
        if ref is None:
            return None
        retry = self._find_retry(ref)
        located: tuple[str, str, JobRef, int | None] | None = None
        for attempt in range(1, MAX_ATTEMPT + 1):
            current = ref.with_attempt(attempt)
            state = self._locate(current)
            if state is not None:
                located = (state, current.file, current, None)
                break
            if retry is not None and retry[1].attempt == attempt:
                located = ("retry", retry[2], retry[1], retry[0])
                break
            if not self._result_exists(current) and not self._result_exists(current.next_attempt()):
                return None
        if located is None:
            return None
        state, file, current, due = located
        status = JobStatus(ref.name, state, file, current.attempt, ref.priority, ref.epoch_ms, due)
        status.results = self._results(current)
        if state == "processing":
            status.owner = self._owner_of(file)
        if with_request:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(self.dirs[state], file), "rb") as handle:
                body = json.loads(handle.read())
                status.request = without_tokens(body) if isinstance(body, dict) else body
        return status

    def _locate(self, ref: JobRef) -> str | None:
        for state in ("inbox", "processing", "asked", "done", "failed", "dlq"):
            if os.path.exists(os.path.join(self.dirs[state], ref.file)):
                return state
        return None

    def _find_retry(self, ref: JobRef) -> tuple[int, JobRef, str] | None:
        marker = f"_{ref.stem}.a"
        with os.scandir(self.dirs["retry"]) as entries:
            for entry in entries:
                if marker in entry.name:
                    parsed = parse_retry(entry.name)
                    if parsed is not None and parsed[1].stem == ref.stem:
                        return parsed[0], parsed[1], entry.name
        return None

    def _result_exists(self, ref: JobRef) -> bool:
        return os.path.exists(os.path.join(self.dirs["out"], ref.result_file()))

    def _results(self, ref: JobRef) -> list[dict[str, Any]]:
        results = []
        for attempt in range(1, ref.attempt + 1):
            path = os.path.join(self.dirs["out"], ref.result_file(attempt))
            try:
                with open(path, "rb") as handle:
                    results.append(json.loads(handle.read()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                results.append({"attempt": attempt, "status": "unreadable", "error": str(exc)})
        return results

    def _owner_of(self, file: str) -> dict[str, Any] | None:
        for path in list_registries(self.claims_dir):
            try:
                with foreign_registry(path) as (owner, dead, _fd):
                    if owner is not None and file in owner.claims:
                        info = owner.as_dict()
                        del info["claims"]
                        info["alive"] = not dead or path in {r.path for r in self._registries.values()}
                        return info
            except FileNotFoundError:
                continue
        return None

    def stats(self) -> QueueStats:
        now = time.monotonic()  # a bound on scan cost, not queue behaviour: real time
        cached = self._stats_cache
        if cached is not None and now - cached[0] < STATS_MAX_AGE_S:
            return cached[1]
        sizes = {}
        for state in STATES:
            with os.scandir(self.dirs[state]) as entries:
                sizes[state] = sum(1 for e in entries if is_candidate(e.name))
        if self._index is not None:
            with contextlib.suppress(OSError):  # an unreadable WAL: counters as last read
                self._index.refresh()
            with self._index.lock:
                counts = Counter(self._index.counts)
        else:
            with self._counts_lock:
                counts = Counter(self._counts)
        counters = {name: counts.get(kind, 0) for kind, name in COUNTER_NAMES.items()}
        counters["wal_write_errors"] = self._writer.errors if self._writer is not None else 0
        result = QueueStats(sizes, counters)
        self._stats_cache = (now, result)
        return result

    # --- plumbing --------------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._inbox.stop()
        if self._maintenance is not None and self._maintenance is not threading.current_thread():
            self._maintenance.join(timeout=5)
        with self._registry_lock:
            for registry in self._registries.values():
                registry.close()
            self._registries.clear()
        if self._writer is not None:
            self._writer.close()
        self._commit.close()

    def _let_go_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors that carry the parent's locks."""
        for registry in self._registries.values():
            registry.close()
        self._registries = {}
        if self._writer is not None:
            self._writer.forget()
        self._inbox.after_fork_in_child()
        self._commit.after_fork_in_child()
        self._maintenance = None
        self._stop.set()

    def _registry_for(self, claim: Claim) -> ClaimRegistry:
        registry = self._registries.get(claim.worker_id)
        if registry is None:
            raise ClaimLost(f"{claim.name}: worker {claim.worker_id!r} holds no claims in this process")
        return registry

    def _ref_of(self, claim: Claim) -> JobRef:
        ref = parse_file(claim.file)
        if ref is None:
            raise ClaimLost(f"{claim.file}: not a job file")
        return ref

    def _ref_from_status(self, status: JobStatus) -> JobRef:
        ref = parse_name(status.name)
        assert ref is not None
        return ref.with_attempt(status.attempt)

    def _move(self, src_state: str, src_file: str, dst_state: str, dst_file: str) -> bool:
        try:
            os.rename(os.path.join(self.dirs[src_state], src_file), os.path.join(self.dirs[dst_state], dst_file))
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._reraise(f"move {src_state}/{src_file}", exc)
        return True

    def transition(
        self,
        src: str,
        src_file: str,
        dst: str,
        dst_file: str,
        kind: str,
        *,
        at_once: bool = False,
        sync: bool = True,
        **record: Any,
    ) -> bool:
        """One state change: move ``src/src_file`` to ``dst/dst_file``, log ``kind`` with ``record``, make
        both durable.  False (nothing logged) when the source is gone (someone else moved it).

        Durable means the WAL record is synced: a crash loses at most the rename, and the job is then found
        where it was (a claim is recovered, at least once).  ``at_once`` also fsyncs the directories (and
        ``out/``) now, for changes an operator was told about that no recovery would redo (requeue, approve).
        ``sync=False`` leaves the sync to the caller (:meth:`_sync_after`), once for a batch of changes."""
        if not self._move(src, src_file, dst, dst_file):
            return False
        self._log(kind, **record)
        if sync:
            self._sync_after(src, dst, at_once=at_once)
        return True

    def _sync_after(self, src: str, dst: str, *, at_once: bool = False) -> None:
        if at_once or self._writer is None:
            self._sync(src, dst, "out")
        else:
            self._sync_wal()

    def _sync(self, *states: str) -> None:
        """fsync the directories of ``states`` and the WAL together (group commit)."""
        if not self.config.fsync:
            return
        try:
            self._commit.sync(dirs=[self.dirs[s] for s in states])
        except OSError as exc:
            self._reraise("fsync", exc)

    def _sync_wal(self) -> None:
        """The WAL alone: the commit point of a change whose files a checkpoint syncs later."""
        if not self.config.fsync:
            return
        try:
            self._commit.sync()
        except OSError as exc:
            self._reraise("fsync", exc)

    def _count(self, kind: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[kind] += n

    def _log(self, kind: str, ts: int | None = None, **record: Any) -> None:
        self._count(kind, int(record.get("n", 1)))
        if self._writer is not None:
            self._writer.append({"t": kind, "ts": ts if ts is not None else self._now_ms(), **record})

    def _reraise(self, what: str, exc: OSError) -> NoReturn:
        """Raise a full, read-only or failing disk as QueueNotWritable; anything else as it is."""
        if is_not_writable(exc):
            log.error("queue not writable: %s: %s", what, exc)
            raise QueueNotWritable(what, exc) from exc
        raise exc

    def _write_tmp(self, data: bytes, what: str, *, durable: bool = True) -> str:
        """A new file in tmp/ holding ``data``; with ``durable`` and MACHINA_WAL_FSYNC=1 fsynced (shared with
        concurrent writers) before it is returned."""
        tmp = os.path.join(self.dirs["tmp"], f"{os.getpid()}_{secrets.token_hex(6)}.tmp")
        try:
            fd = create_new(tmp, data)
        except OSError as exc:
            self._reraise(what, exc)
        try:
            if durable and self.config.fsync:
                self._commit.sync(fds=(fd,), wal=False)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                self._reraise(what, exc)
            raise
        os.close(fd)
        return tmp

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _clean_tmp(self) -> None:
        """Temporary files of processes that died mid-write (never acknowledged, so safe to drop)."""
        now = self.clock.time()
        with os.scandir(self.dirs["tmp"]) as entries:
            for entry in entries:
                pid_text = entry.name.split("_", 1)[0]
                try:
                    stale = not _pid_alive(int(pid_text)) or now - entry.stat().st_mtime > TMP_MAX_AGE_S
                except (ValueError, FileNotFoundError):
                    continue
                if stale and int(pid_text) != os.getpid():
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


_OPEN_QUEUES: weakref.WeakSet[FileQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_OPEN_QUEUES):
        queue._let_go_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

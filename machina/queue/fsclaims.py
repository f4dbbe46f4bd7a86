"""Claims and their ends: claim, heartbeat, complete, fail, ask, release."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from machina.backoff import retry_delay_ms
from machina.fsutil import read_file
from machina.log import fields
from machina.queue.base import (
    Claim,
)
from machina.queue.claims import ClaimRegistry
from machina.queue.errors import (
    ClaimLost,
    InvalidRequest,
)
from machina.queue.faults import point as fault_point
from machina.queue.fscore import MAX_REASON
from machina.queue.fsenqueue import EnqueueOps
from machina.queue.fsmaintenance import MaintenanceOps
from machina.queue.names import (
    JobRef,
    parse_file,
)
from machina.queue.request import load_request

log = logging.getLogger(__name__)


class ClaimOps(MaintenanceOps, EnqueueOps):
    """A worker's side of the queue: claim a job, keep it, finish it."""

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
            req = load_request(read_file(path))
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

    def heartbeat(self, claim: Claim) -> None:
        registry = self._registry_for(claim)
        if not os.path.exists(os.path.join(self.dirs["processing"], claim.file)):
            registry.remove(claim.file)
            raise ClaimLost(f"{claim.name}: the claim was taken away (recovered or moved by an operator)")
        registry.heartbeat()

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

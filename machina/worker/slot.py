"""A job slot: the loop that claims a job, runs it in a job child and settles it with the queue.

A worker runs MACHINA_WORKER_CONCURRENCY slots, each a thread with a child of its own from the pool:

1. take a ready child (none ready: claim nothing, so a child that cannot start spends no attempt);
2. claim a job (waits up to half a second, then looks at the stop flag again);
3. send it to the child with a fresh run id, and wait for the answer while heartbeating the claim;
   past MACHINA_JOB_TIMEOUT_MS the child's process group is killed;
4. settle: complete or fail with the attempt's result (:mod:`machina.worker.results`), count it in the
   worker's figures; a child that died, hung or misbehaved is replaced, a healthy one keeps going until
   MACHINA_WORKER_CHILD_MAX_JOBS.

When the worker stops, a slot claims nothing more; a running job may finish until the grace deadline,
after which its child is killed and the job released to the inbox (its attempt not spent).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from machina.audit.runlog import log_path
from machina.backoff import Backoff
from machina.engine import new_run_id
from machina.log import fields, log_context
from machina.metrics.figures import FiguresWriter
from machina.queue import BaseQueue, Claim, ClaimLost, QueueError, QueueNotWritable
from machina.worker import protocol, results
from machina.worker.children import JobChild
from machina.worker.pool import ChildPool
from machina.worker.settings import TICK_S, WorkerSettings

logger = logging.getLogger(__name__)

#: Backoff while the queue cannot record a result (disk full): 1 s doubling to this.
SETTLE_BACKOFF_MAX_S = 30.0


class ClaimGate:
    """Holds every slot back from claiming after an infrastructure failure (the toolhost unreachable), so
    that a worker whose toolhost is down does not spend one attempt of every queued job per second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._backoff = Backoff(first=1.0, cap=30.0, jitter=True)

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    def trouble(self) -> float:
        """One more infrastructure failure: the pause that starts now, in seconds (1 s doubling to 30 s)."""
        with self._lock:
            delay = self._backoff.delay()
            self._until = time.monotonic() + delay
            return delay

    def clear(self) -> None:
        self._backoff.reset()


@dataclass
class WorkerContext:
    """What the slots of one worker share."""

    worker_id: str
    queue: BaseQueue
    pool: ChildPool
    figures: FiguresWriter
    settings: WorkerSettings
    logs_dir: str
    stop: threading.Event
    gate: ClaimGate = field(default_factory=ClaimGate)
    #: Set (monotonic) when the worker begins to stop: running jobs are released once it passes.
    grace_deadline: float | None = None


@dataclass(frozen=True)
class _Answer:
    decision: results.Decision | None  #: None: the claim was released or lost, nothing to settle
    child: JobChild | None  #: the child, when it may run another job


class JobSlot(threading.Thread):
    def __init__(self, index: int, ctx: WorkerContext) -> None:
        super().__init__(name=f"job-slot-{index}", daemon=True)
        self.index = index
        self.ctx = ctx
        self.last_tick = time.monotonic()
        self.job: str | None = None  #: the job running now
        self.failed: BaseException | None = None

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug: the service sees it through failed and stops the worker
            logger.exception("job slot %d failed", self.index)
            self.failed = exc

    def _loop(self) -> None:
        ctx = self.ctx
        child: JobChild | None = None
        while not ctx.stop.is_set():
            self.tick()
            paused = ctx.gate.remaining()
            if paused > 0:
                ctx.stop.wait(min(paused, TICK_S))
                continue
            if child is None:
                child = ctx.pool.acquire(TICK_S)
                continue
            if child.exited():  # died while idle (the OOM killer, an operator): no job is charged for it
                reason = results.exit_reason(child.returncode)
                logger.warning("idle job child %d ended (%s): replaced", child.pid, reason)
                ctx.pool.discard(child)
                child = None
                continue
            try:
                claim = ctx.queue.claim(ctx.worker_id, timeout=TICK_S)
            except QueueError as exc:
                logger.error("cannot claim: %s", exc)
                ctx.stop.wait(1.0)
                continue
            if claim is not None:
                child = self._attempt(claim, child)
        if child is not None:
            ctx.pool.give_back(child)

    # --- one attempt -----------------------------------------------------------------------------------

    def _attempt(self, claim: Claim, child: JobChild) -> JobChild | None:
        ctx = self.ctx
        with log_context(job=claim.name, request_id=claim.request_id):
            if ctx.stop.is_set():
                self._release(claim)
                return child
            self.job = claim.name
            try:
                answer = self._run(claim, child)
            finally:
                self.job = None
            if answer.decision is not None:
                self._settle(claim, answer.decision)
            return self._keep(answer.child)

    def _run(self, claim: Claim, child: JobChild) -> _Answer:
        run_id = new_run_id()
        path = log_path(self.ctx.logs_dir, run_id)
        started = time.monotonic()
        message = {"op": protocol.RUN, "job": claim.name, "attempt": claim.attempt, "run_id": run_id}
        try:
            child.send({**message, "request": claim.request})
        except OSError as exc:  # it died while idle: the job never reached it
            return self._never_reached(claim, child, str(exc))
        logger.debug("running attempt %d in child %d", claim.attempt, child.pid, extra=fields(run_id=run_id))
        return self._wait(claim, child, run_id, path, started)

    def _wait(self, claim: Claim, child: JobChild, run_id: str, path: str, started: float) -> _Answer:
        ctx = self.ctx
        deadline = started + ctx.settings.job_timeout_ms / 1000
        next_beat = started + ctx.settings.heartbeat_s
        while True:
            now = time.monotonic()
            limit = min(deadline, next_beat, now + TICK_S, ctx.grace_deadline or deadline)
            if child.poll(limit - now):
                return self._answer(claim, child, run_id, path, started)
            self.tick()
            now = time.monotonic()
            if now >= deadline:
                self.ctx.pool.discard(child)
                logger.warning("job timed out after %d ms: child %d killed", ctx.settings.job_timeout_ms, child.pid)
                took = (now - started) * 1000
                timeout_ms = ctx.settings.job_timeout_ms
                return _Answer(results.timed_out(run_id=run_id, log_path=path, child_pid=child.pid,
                                                 timeout_ms=timeout_ms, duration_ms=took), None)  # fmt: skip
            if ctx.grace_deadline is not None and now >= ctx.grace_deadline:
                logger.warning("stopping: the job did not finish within the grace period; child %d killed", child.pid)
                self.ctx.pool.discard(child)
                self._release(claim)
                return _Answer(None, None)
            if now >= next_beat:
                next_beat = now + ctx.settings.heartbeat_s
                try:
                    ctx.queue.heartbeat(claim)
                except ClaimLost as exc:
                    logger.warning("%s: child %d killed", exc, child.pid)
                    self.ctx.pool.discard(child)
                    return _Answer(None, None)

    def _answer(self, claim: Claim, child: JobChild, run_id: str, path: str, started: float) -> _Answer:
        took = (time.monotonic() - started) * 1000
        try:
            message = child.receive()
        except protocol.Unread as exc:  # it died idle, just after the job was sent: the job never reached it
            return self._never_reached(claim, child, str(exc))
        except (EOFError, OSError):
            reason = results.exit_reason(child.kill())
            logger.warning("job child %d died mid-job (%s)", child.pid, reason)
            self.ctx.pool.discard(child)
            return self._lost(child, run_id, path, reason, f"the job child died ({reason})", took)
        except protocol.ProtocolViolation as exc:
            return self._misbehaved(child, run_id, path, str(exc), took)
        op = message.get("op")
        if op == protocol.RESULT:
            try:
                decision = results.decide(message.get("result"), child_pid=child.pid, duration_ms=took)
            except results.BadSummary as exc:
                return self._misbehaved(child, run_id, path, f"bad result: {exc}", took)
            return _Answer(decision, child)
        if op == protocol.ERROR and message.get("fatal") is False:
            error = str(message.get("error", ""))
            return _Answer(results.attempt_error(run_id=run_id, log_path=path, child_pid=child.pid, error=error,
                                                 duration_ms=took), child)  # fmt: skip
        if op == protocol.ERROR:
            self.ctx.pool.discard(child)
            error = str(message.get("error", ""))
            return self._lost(child, run_id, path, "child_exception", error, took)
        return self._misbehaved(child, run_id, path, f"unexpected op {op!r}", took)

    def _never_reached(self, claim: Claim, child: JobChild, why: str) -> _Answer:
        """The child died before it read the job: no attempt is charged, the job goes back to the queue."""
        logger.warning("job child %d gone before the job reached it (%s): job given back", child.pid, why)
        self.ctx.pool.discard(child)
        self._release(claim)
        return _Answer(None, None)

    def _misbehaved(self, child: JobChild, run_id: str, path: str, error: str, took: float) -> _Answer:
        logger.error("job child %d broke the protocol (%s): killed", child.pid, error)
        self.ctx.pool.discard(child)
        return self._lost(child, run_id, path, "child_misbehaved", error, took)

    @staticmethod
    def _lost(child: JobChild, run_id: str, path: str, reason: str, error: str, took: float) -> _Answer:
        decision = results.crashed(
            run_id=run_id, log_path=path, child_pid=child.pid, reason=reason, error=error, duration_ms=took
        )
        return _Answer(decision, None)

    def _keep(self, child: JobChild | None) -> JobChild | None:
        if child is None:
            return None
        child.jobs += 1
        max_jobs = self.ctx.settings.child_max_jobs
        if max_jobs and child.jobs >= max_jobs:
            logger.debug("job child %d recycled after %d jobs", child.pid, child.jobs)
            self.ctx.pool.retire(child)
            return None
        return child

    # --- settling with the queue -----------------------------------------------------------------------

    def _settle(self, claim: Claim, decision: results.Decision) -> None:
        ctx = self.ctx
        status = decision.result.get("status")
        if self._record(claim, decision):
            ctx.figures.record_job(decision.ok, decision.tool_calls)
        if not decision.complete and decision.retryable and status in results.FAILED_STATUSES:
            pause = ctx.gate.trouble()
            logger.warning("infrastructure failure (%s): claiming nothing for %.1f s", decision.reason, pause)
        elif status in results.COMPLETE_STATUSES + results.FAILED_STATUSES:
            ctx.gate.clear()

    def _record(self, claim: Claim, decision: results.Decision) -> bool:
        """complete, ask or fail; retried while the queue cannot write (disk full).  False when not recorded."""
        ctx = self.ctx
        backoff = Backoff(first=1.0, cap=SETTLE_BACKOFF_MAX_S)
        while True:
            try:
                if decision.complete:
                    ctx.queue.complete(claim, decision.result)
                    self._log_outcome(claim, decision, "done")
                elif decision.asked:
                    ctx.queue.ask(claim, decision.result)
                    self._log_outcome(claim, decision, "asked")
                else:
                    state = ctx.queue.fail(claim, decision.reason, retryable=decision.retryable, result=decision.result)
                    self._log_outcome(claim, decision, state)
                return True
            except ClaimLost as exc:
                logger.warning("result kept in out/ but %s", exc)
                return True
            except QueueNotWritable as exc:
                if ctx.stop.is_set():
                    logger.error("stopping with the result unrecorded (%s): the job runs again after recovery", exc)
                    return False
                delay = backoff.delay()
                logger.error("cannot record the result (%s): retrying in %.0f s", exc, delay)
                self.tick()
                ctx.stop.wait(delay)

    @staticmethod
    def _log_outcome(claim: Claim, decision: results.Decision, state: str) -> None:
        result: dict[str, Any] = decision.result
        extra = fields(run_id=result.get("run_id"), attempt=claim.attempt, status=result.get("status"))
        if decision.ok:
            logger.debug("job %s", state, extra=extra)
        else:
            logger.info("job %s: %s", state, decision.reason, extra=extra)

    def _release(self, claim: Claim) -> None:
        try:
            self.ctx.queue.release(claim)
        except QueueError as exc:  # lost, or the disk is full: recovery gives it back at the next start
            logger.error("could not give the job back (%s): it is recovered when this worker restarts", exc)

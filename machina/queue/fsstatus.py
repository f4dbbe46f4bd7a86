"""Status and operators: list, show, stats, requeue, approve, purge."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from typing import Any

from machina.approvals import LEASES_KEY, without_tokens
from machina.log import fields
from machina.queue import faults
from machina.queue.base import (
    FINAL_STATES,
    STATES,
    JobInfo,
    JobStatus,
    QueueStats,
)
from machina.queue.claims import foreign_registry, list_registries
from machina.queue.errors import (
    JobNotFound,
    QueueError,
)
from machina.queue.fscore import COUNTER_NAMES, PURGE_RECORD_NAMES, STATS_MAX_AGE_S, QueueCore
from machina.queue.names import (
    MAX_ATTEMPT,
    JobRef,
    is_candidate,
    parse_file,
    parse_name,
    parse_retry,
)
from machina.queue.request import load_request, validate_request

log = logging.getLogger(__name__)

#: How many times job_status looks for a job that is moving between two places before calling it unknown.
LOOKUP_PASSES = 3


class StatusOps(QueueCore):
    """What an operator sees and does: job status, listings, counters, requeue, approve, purge."""

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
        # Each look is a separate stat, so a job renamed between two of them (processing/ to retry/, asked/
        # to inbox/) is seen in neither. Every move is one atomic rename, so the job is always in exactly one
        # place: a pass that finds nothing is looked again before the job is called unknown.
        for _ in range(LOOKUP_PASSES):
            located = self._lookup(ref)
            if located is not None:
                break
        else:
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

    def _lookup(self, ref: JobRef) -> tuple[str, str, JobRef, int | None] | None:
        """One pass over the job's places: (state, file, ref at that attempt, retry due) or None."""
        retry = self._find_retry(ref)
        faults.point("status.retry_scanned", job=ref.name)
        for attempt in range(1, MAX_ATTEMPT + 1):
            current = ref.with_attempt(attempt)
            state = self._locate(current)
            if state is not None:
                return state, current.file, current, None
            if retry is not None and retry[1].attempt == attempt:
                return "retry", retry[2], retry[1], retry[0]
            if not self._result_exists(current) and not self._result_exists(current.next_attempt()):
                return None
        return None

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

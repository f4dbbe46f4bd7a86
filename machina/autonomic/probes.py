"""L2 Test: the suite tests itself with real requests through the queue's public interface.

Each L2 run first collects the results of the probes it enqueued before (``job_status``, the same call
``machina queue show`` makes), records each as an experience, and only when none is still pending enqueues
a new batch.  The engine never claims or moves queue files (AGENT.md fault 13): workers run the probes like
any other job, at a low priority so that people's jobs go first.

A batch is *perfect* when every probe ended ``done``; after ``PERFECT_STREAK`` perfect batches in a row L2
runs ``QUIET_FACTOR`` times less often, until a batch is not perfect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

from machina.clock import Clock
from machina.fsutil import ensure_dir, write_atomic
from machina.memory.streams import append

PROBE_PRIORITY = 9000  # lower runs first; people's jobs default to 5000
PROBE_TIMEOUT_S = 900.0  # a probe with no final result by then counts as failed
PERFECT_STREAK = 3
QUIET_FACTOR = 8.0
FINAL = ("asked", "done", "failed", "dlq")
FIXTURE = "data/autonomic/probe.log"
FIXTURE_TEXT = "INFO start\nERROR probe one\nINFO middle\nERROR probe two\n"


@dataclass(frozen=True)
class Probe:
    name: str
    request: dict[str, Any]


PROBES = (
    Probe("noop", {"goal_id": "goal.NOOP.v1"}),
    Probe(
        "error_scan",
        {
            "goal_id": "goal.ERROR_SCAN.v1",
            "inputs": {"input_path": FIXTURE, "pattern": "ERROR", "report_path": "reports/autonomic/l2_probe.md"},
        },
    ),
)


class ProbeQueue(Protocol):
    """The two calls of the queue contract (machina.queue.base.BaseQueue) L2 needs."""

    def enqueue(self, request: dict[str, Any], request_id: str | None = None, priority: int | None = None) -> Any: ...

    def job_status(self, name: str, *, with_request: bool = False) -> Any: ...


@dataclass(frozen=True)
class Collected:
    finished: int
    passed: int
    still_pending: int
    batch_done: bool  # the last batch has no pending probe left
    batch_perfect: bool


def collect(
    queue: ProbeQueue, pending: dict[str, dict[str, Any]], memory_dir: str, clock: Clock, fsync: bool
) -> Collected:
    """Record every pending probe that ended (or timed out) as an experience; ``pending`` is updated in place."""
    finished = passed = 0
    batch_failed = False
    for name, info in sorted(pending.items()):
        status = queue.job_status(name)
        age = clock.time() - float(info.get("enqueued_at", 0.0))
        if status is not None and status.state in FINAL:
            ok, why = _judge(status)
        elif age >= PROBE_TIMEOUT_S:
            ok, why = (
                False,
                f"no final result after {PROBE_TIMEOUT_S:.0f} s (state {getattr(status, 'state', 'unknown')})",
            )
        else:
            continue
        record = {
            "user_request": f"L2 self-test {info.get('probe')}",
            "tool_used": str(info.get("goal_id")),
            "success": ok,
            "elapsed_sec": round(max(0.0, age), 3),
            "source": "autonomic",
            "intent_type": "self_test",
            "result_preview": why[:300],
        }
        append(memory_dir, "experiences", record, request_id=info.get("request_id"), fsync=fsync, clock=clock)
        del pending[name]
        finished += 1
        passed += int(ok)
        batch_failed = batch_failed or not ok
    return Collected(finished, passed, len(pending), not pending, finished > 0 and not batch_failed)


def _judge(status: Any) -> tuple[bool, str]:
    """Passed: the job is in done/ and its run (the worker's result inside the last out/ envelope) ended done."""
    results = list(getattr(status, "results", []) or [])
    envelope = results[-1] if results else {}
    found = envelope.get("result")
    run: dict[str, Any] = found if isinstance(found, dict) else {}
    run_status = str(run.get("status") or "no run result")
    why = f"{status.state}: run {run_status} {run.get('reason') or ''}".strip()
    return status.state == "done" and run_status == "done", why


def write_fixture(root: str) -> None:
    """The file the ERROR_SCAN probe reads (two ERROR lines), rewritten each batch so it cannot drift."""
    path = os.path.join(root, FIXTURE)
    ensure_dir(os.path.dirname(path))
    write_atomic(path, FIXTURE_TEXT.encode(), fsync=False, mode=0o644)


def enqueue_batch(queue: ProbeQueue, root: str, batch: int, clock: Clock) -> dict[str, dict[str, Any]]:
    """Enqueue one probe of each kind; what ``pending`` should hold for them."""
    write_fixture(root)
    pending: dict[str, dict[str, Any]] = {}
    for probe in PROBES:
        request_id = f"autonomic-l2-{batch}-{probe.name}"
        request = {**probe.request, "request_id": request_id}
        result = queue.enqueue(request, request_id=request_id, priority=PROBE_PRIORITY)
        pending[result.name] = {
            "probe": probe.name,
            "goal_id": probe.request["goal_id"],
            "request_id": request_id,
            "enqueued_at": clock.time(),
            "batch": batch,
        }
    return pending

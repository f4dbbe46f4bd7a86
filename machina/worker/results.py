"""What a worker records for each attempt of a job, and what it asks the queue to do with the job.

The child summarises its :class:`~machina.engine.RunResult` (:func:`summarize`); the parent checks that
summary (it is data from another process) and maps it to a queue operation (:func:`decide`):

=========================  ==========================================================================
engine status              queue
=========================  ==========================================================================
``done``                   ``complete``: done/
``asked`` by a tool call   ``ask``: asked/, until an operator approves the calls listed in the
that needs a lease         result's ``approvals`` (``machina queue approve``: leases bound to each
                           call, carried by the job's ``_leases``) and the job runs again
``asked`` by the selector, ``complete``: done/, the result's ``status`` says ``asked`` / ``noop``
``noop``                   (the run ended as the goal's rules allow; running it again gives the same)
``failed``, ``breaker``    ``fail``, retryable when the engine says so (``RunResult.retryable``: only
                           infrastructure failures, the toolhost unreachable): retry/, then dlq/ once
                           the attempts are spent; otherwise failed/ (an invalid request, an unknown
                           goal, a denied tool, a budget or loop breaker: the same again next time)
=========================  ==========================================================================

When the child cannot answer, the attempt fails *retryable* with ``status`` ``crashed`` (the child died:
signal or exit status in ``reason``; or it reported an unexpected exception, or broke the protocol),
``timed_out`` (``MACHINA_JOB_TIMEOUT_MS``) or ``error`` (the run log could not be written): the queue
retries and finally dead-letters a job that keeps doing it.

The ``result`` of every out/ envelope is an :data:`ATTEMPT_FIELDS` object: run id, status, reason, error,
the state digest, the run log's path, per-tool totals (ok, fail, duration_ms_total) and the outputs (inline up to
:data:`OUTPUTS_INLINE_MAX` bytes; always summarised by size and SHA-256).
"""

from __future__ import annotations

import hashlib
import os
import signal
from dataclasses import dataclass
from typing import Any

from machina import approvals
from machina.audit.canonical import canonical
from machina.engine import ASKED, BREAKER, DONE, FAILED, NOOP, RunResult
from machina.engine.result import tool_totals
from machina.log import redact

CRASHED = "crashed"  # the job child died or failed unexpectedly
TIMED_OUT = "timed_out"  # the job ran past MACHINA_JOB_TIMEOUT_MS; its child was killed
ERROR = "error"  # the child could not start the run (its run log could not be written)

#: Engine statuses after which the job is complete (done/), with the status recorded in its result.
COMPLETE_STATUSES = (DONE, ASKED, NOOP)
#: Engine statuses after which the attempt failed.
FAILED_STATUSES = (FAILED, BREAKER)

#: Outputs up to this size (canonical JSON) are copied into the result; larger ones only summarised.
OUTPUTS_INLINE_MAX = 16 * 1024
ERROR_MAX = 2000
ATTEMPT_FIELDS = (
    "run_id",
    "status",
    "reason",
    "error",
    "goal_id",
    "request_id",
    "steps",
    "state_digest",
    "log_path",
    "retryable",
    "tool_stats",
    "outputs",
    "outputs_summary",
    "duration_ms",
    "child_pid",
    "approvals",
)


class BadSummary(ValueError):
    """A child answered with something that is not a run summary."""


def summarize(result: RunResult) -> dict[str, Any]:
    """The child's answer for one run: what the out/ envelope records, plus the tool calls for figures."""
    summary: dict[str, Any] = {
        "run_id": result.run_id,
        "status": result.status,
        "reason": result.reason,
        "error": result.error[:ERROR_MAX],
        "goal_id": result.goal_id,
        "request_id": result.request_id,
        "steps": result.steps,
        "state_digest": result.state_digest,
        "log_path": result.log_path,
        "retryable": result.retryable,
        "tool_stats": tool_totals(result.tool_stats),
        "tool_calls": [[aid, ok, round(ms, 3)] for aid, ok, ms in result.tool_calls],
    }
    if result.approvals:
        summary["approvals"] = result.approvals
    # the run log holds the same outputs in canonical form: a value canonical() refuses never gets here
    encoded = {aid: canonical(value) for aid, value in sorted(result.outputs.items())}
    summary["outputs_summary"] = {
        aid: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for aid, data in encoded.items()
    }
    if sum(len(data) for data in encoded.values()) <= OUTPUTS_INLINE_MAX:
        summary["outputs"] = result.outputs
    return summary


@dataclass(frozen=True)
class Decision:
    """What to do with a claimed job after one attempt."""

    complete: bool  #: True: queue.complete; False: queue.fail
    retryable: bool
    reason: str  #: the failure reason given to queue.fail (one line)
    result: dict[str, Any]  #: the out/ envelope's result
    ok: bool  #: for the figures: the job succeeded (engine status done)
    tool_calls: tuple[tuple[str, bool, float], ...] = ()
    asked: bool = False  #: True: queue.ask (a tool call needs a lease an operator may grant)


def decide(summary: Any, *, child_pid: int, duration_ms: float) -> Decision:
    """The decision for a child's run summary; BadSummary when it is not one."""
    checked, calls = check_summary(summary)
    checked.update(child_pid=child_pid, duration_ms=round(duration_ms, 3))
    status = checked["status"]
    if status == ASKED and any(a["status"] == approvals.ASKED for a in checked.get("approvals", [])):
        return Decision(False, False, f"asked: {checked['reason']}", checked, False, calls, asked=True)
    if status in COMPLETE_STATUSES:
        return Decision(True, False, "", checked, status == DONE, calls)
    why = f"{status}: {checked['reason']}" + (f": {checked['error']}" if checked["error"] else "")
    return Decision(False, bool(checked["retryable"]), why, checked, False, calls)


def check_summary(summary: Any) -> tuple[dict[str, Any], tuple[tuple[str, bool, float], ...]]:
    """The summary's recorded fields and its tool calls, type-checked."""
    if not isinstance(summary, dict):
        raise BadSummary("result is not an object")
    status = summary.get("status")
    if status not in COMPLETE_STATUSES + FAILED_STATUSES:
        raise BadSummary(f"unknown status {status!r}")
    for key, kind in (("run_id", str), ("reason", str), ("error", str), ("retryable", bool)):
        if not isinstance(summary.get(key), kind):
            raise BadSummary(f"{key} is not a {kind.__name__}")
    try:
        calls = tuple((str(aid), bool(ok), float(ms)) for aid, ok, ms in summary.get("tool_calls", []))
    except (TypeError, ValueError):
        raise BadSummary("tool_calls are not (aid, ok, duration_ms) triples") from None
    problem = approvals.approvals_error(summary.get("approvals", []))
    if problem is not None:
        raise BadSummary(problem)
    recorded = {key: summary[key] for key in ATTEMPT_FIELDS if key in summary}
    recorded["error"] = redact(recorded["error"])[:ERROR_MAX]
    return recorded, calls


def crashed(*, run_id: str, log_path: str, child_pid: int, reason: str, error: str, duration_ms: float) -> Decision:
    """The child died or failed unexpectedly: a retryable failure (the queue dead-letters repeat offenders)."""
    return _lost_attempt(CRASHED, run_id, log_path, child_pid, reason, error, duration_ms)


def attempt_error(*, run_id: str, log_path: str, child_pid: int, error: str, duration_ms: float) -> Decision:
    """The child could not run the job but is sound (its run log could not be written: a full disk)."""
    return _lost_attempt(ERROR, run_id, log_path, child_pid, "run_log_unwritable", error, duration_ms)


def timed_out(*, run_id: str, log_path: str, child_pid: int, timeout_ms: int, duration_ms: float) -> Decision:
    error = f"the job ran longer than MACHINA_JOB_TIMEOUT_MS={timeout_ms}; its child was killed"
    return _lost_attempt(TIMED_OUT, run_id, log_path, child_pid, "job_timeout", error, duration_ms)


def _lost_attempt(
    status: str, run_id: str, log_path: str, child_pid: int, reason: str, error: str, duration_ms: float
) -> Decision:
    result = {
        "run_id": run_id,
        "status": status,
        "reason": reason,
        "error": redact(error)[:ERROR_MAX],
        "log_path": log_path if os.path.exists(log_path) else None,
        "retryable": True,
        "child_pid": child_pid,
        "duration_ms": round(duration_ms, 3),
    }
    return Decision(False, True, f"{status}: {reason}: {result['error']}", result, False)


def exit_reason(returncode: int | None) -> str:
    """``killed_by_SIGSEGV``, ``exit_status_3``, or ``running`` for a child's return code."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed_by_{signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed_by_signal_{-returncode}"
    return f"exit_status_{returncode}"

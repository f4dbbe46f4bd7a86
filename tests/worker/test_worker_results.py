"""What each attempt records and what the queue is told: the engine's statuses, a child's broken answers,
crashes and timeouts (machina.worker.results)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from machina.engine import RunResult
from machina.metrics.figures import ToolFigures
from machina.worker import results


def run_result(status: str, reason: str = "complete", retryable: bool = False, **extra: Any) -> RunResult:
    return RunResult(
        run_id="20260101T000000Z_0123456789",
        request_id="rid",
        goal_id="goal.ERROR_SCAN.v1",
        status=status,
        reason=reason,
        steps=2,
        state_digest="ab" * 32,
        log_path="/root/logs/run_20260101T000000Z_0123456789.jsonl",
        tool_stats={"AID.ERROR_SCAN.v1": ToolFigures(1, 0, 1.5)},
        tool_calls=[("AID.ERROR_SCAN.v1", True, 1.5)],
        retryable=retryable,
        **extra,
    )


def decide(result: RunResult) -> results.Decision:
    # Through JSON, as the summary crosses the pipe.
    return results.decide(json.loads(json.dumps(results.summarize(result))), child_pid=42, duration_ms=3.0)


@pytest.mark.parametrize(
    ("status", "reason", "retryable", "complete", "queue_retryable", "ok"),
    [
        ("done", "complete", False, True, False, True),
        ("asked", "selector_ask_sup", False, True, False, False),
        ("noop", "selector_noop", False, True, False, False),
        ("failed", "unknown_goal", False, False, False, False),
        ("failed", "toolhost_unavailable", True, False, True, False),
        ("breaker", "max_steps", False, False, False, False),
    ],
)
def test_engine_status_to_queue_operation(
    status: str, reason: str, retryable: bool, complete: bool, queue_retryable: bool, ok: bool
) -> None:
    decision = decide(run_result(status, reason, retryable))
    assert (decision.complete, decision.retryable, decision.ok) == (complete, queue_retryable, ok)
    assert decision.result["status"] == status  # asked / noop stay visible in done/
    assert decision.result["reason"] == reason
    assert decision.tool_calls == (("AID.ERROR_SCAN.v1", True, 1.5),)
    if not complete:
        assert decision.reason.startswith(f"{status}: {reason}")


def test_the_recorded_result_names_the_run_and_its_log() -> None:
    result = decide(run_result("done", outputs={"AID.ERROR_SCAN.v1": {"matches": 3}})).result
    assert result["run_id"] == "20260101T000000Z_0123456789"
    assert result["log_path"].endswith("run_20260101T000000Z_0123456789.jsonl")
    assert result["state_digest"] == "ab" * 32
    assert result["tool_stats"] == {"AID.ERROR_SCAN.v1": {"ok": 1, "fail": 0, "duration_ms_total": 1.5}}
    assert result["outputs"] == {"AID.ERROR_SCAN.v1": {"matches": 3}}
    assert result["outputs_summary"]["AID.ERROR_SCAN.v1"]["bytes"] == len('{"matches":3}')
    assert (result["child_pid"], result["duration_ms"]) == (42, 3.0)
    assert "tool_calls" not in result  # counted in the figures, not repeated in every envelope


def test_large_outputs_are_summarised_not_copied() -> None:
    big = {"AID.FILE.READ.v1": {"content": "x" * (results.OUTPUTS_INLINE_MAX + 1)}}
    result = decide(run_result("done", outputs=big)).result
    assert "outputs" not in result
    summary = result["outputs_summary"]["AID.FILE.READ.v1"]
    assert summary["bytes"] > results.OUTPUTS_INLINE_MAX and len(summary["sha256"]) == 64


@pytest.mark.parametrize(
    "summary",
    [
        None,
        [],
        {"status": "finished", "run_id": "r", "reason": "", "error": "", "retryable": False},
        {"status": "done", "run_id": 7, "reason": "", "error": "", "retryable": False},
        {"status": "done", "run_id": "r", "reason": "", "error": "", "retryable": "yes"},
        {"status": "done", "run_id": "r", "reason": "", "error": "", "retryable": False, "tool_calls": [["a", True]]},
        {"status": "done", "run_id": "r", "reason": "", "error": "", "retryable": False, "tool_calls": 5},
    ],
)
def test_a_child_answer_that_is_not_a_summary_is_refused(summary: Any) -> None:
    with pytest.raises(results.BadSummary):
        results.decide(summary, child_pid=1, duration_ms=1.0)


def test_a_crash_is_a_retryable_failure_pointing_at_the_partial_log(tmp_path: Any) -> None:
    log = tmp_path / "run_x.jsonl"
    log.write_text("{}\n")
    decision = results.crashed(
        run_id="x", log_path=str(log), child_pid=9, reason="killed_by_SIGSEGV", error="died", duration_ms=5
    )
    assert (decision.complete, decision.retryable, decision.ok) == (False, True, False)
    assert decision.result["status"] == "crashed" and decision.result["log_path"] == str(log)
    assert decision.reason == "crashed: killed_by_SIGSEGV: died"
    missing = results.timed_out(
        run_id="y", log_path=str(tmp_path / "none"), child_pid=9, timeout_ms=100, duration_ms=101
    )
    assert missing.result["log_path"] is None and missing.result["status"] == "timed_out"
    assert "MACHINA_JOB_TIMEOUT_MS=100" in missing.result["error"]


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (-11, "killed_by_SIGSEGV"),
        (-9, "killed_by_SIGKILL"),
        (3, "exit_status_3"),
        (None, "running"),
        (-99, "killed_by_signal_99"),
    ],
)
def test_exit_reason(returncode: int | None, reason: str) -> None:
    assert results.exit_reason(returncode) == reason


def test_a_run_asked_by_a_tool_call_goes_to_asked_with_its_approvals() -> None:
    call = {"aid": "AID.SHELL.EXEC.v1", "tier": 3, "inputs_digest": "ab" * 32, "status": "asked"}
    decision = decide(run_result("asked", "tool_approval_required", approvals=[call]))
    assert (decision.asked, decision.complete, decision.retryable, decision.ok) == (True, False, False, False)
    assert decision.result["approvals"] == [call]


@pytest.mark.parametrize(
    "approvals",
    [
        "all of them",
        [{"aid": "AID.X.v1", "tier": 3, "inputs_digest": "nope", "status": "asked"}],
        [{"aid": "AID.X.v1", "tier": 9, "inputs_digest": "ab" * 32, "status": "asked"}],
        [{"aid": "AID.X.v1", "tier": 1, "inputs_digest": "ab" * 32, "status": "approved"}],
    ],
)
def test_a_child_cannot_slip_bad_approvals_into_a_result(approvals: Any) -> None:
    summary = results.summarize(run_result("asked", "tool_approval_required"))
    summary["approvals"] = approvals
    with pytest.raises(results.BadSummary):
        results.decide(summary, child_pid=1, duration_ms=1.0)

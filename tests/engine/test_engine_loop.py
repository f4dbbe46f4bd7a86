"""The step loop: complete runs, endings, budgets, the loop guard, tool failures and invalid requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, events, operator_goalpack

from machina.audit.verify import verify_log
from machina.toolapi import APPROVAL_REQUIRED, DENIED, LEASE_REQUIRED, SANDBOX_ERROR, TIMEOUT, TOOL_ERROR
from machina.toolhost.leases import inputs_digest


def test_error_scan_runs_the_scan_then_the_report_with_its_findings(make_engine, root: Path) -> None:
    request = {**ERROR_SCAN, "inputs": {"input_path": "data/app.log", "report_path": "reports/errors.md"}}
    result = make_engine().run(request)

    assert result.status == "done" and result.reason == "complete"
    tools = events(result.log_path, "tool")
    assert [t["aid"] for t in tools] == ["AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"]
    scan_output = tools[0]["diff"][0]["value"]
    assert scan_output["matches"] == 3
    assert tools[1]["inputs"]["findings"] == scan_output  # the report got the scan's findings
    assert tools[0]["inputs"]["pattern"] == "ERROR"  # the binding's default
    assert "connection refused" in (root / "reports" / "errors.md").read_text()
    assert result.outputs["AID.ERROR_SCAN.v1"]["matches"] == 3
    assert {aid: (f.ok, f.fail) for aid, f in result.tool_stats.items()} == {
        "AID.ERROR_SCAN.v1": (1, 0),
        "AID.REPORT_SUMMARY.v1": (1, 0),
    }
    assert verify_log(result.log_path).ok


def test_every_event_carries_the_request_id_and_the_log_is_private(make_engine) -> None:
    result = make_engine().run({**ERROR_SCAN, "request_id": "client-42"})
    records = events(result.log_path)
    assert {r["request_id"] for r in records} == {"client-42"}
    assert [r["event"] for r in records] == ["start", "menu", "selection", "tool", "selection", "tool", "done"]
    assert Path(result.log_path).stat().st_mode & 0o777 == 0o600
    assert Path(result.log_path).name == f"run_{result.run_id}.jsonl"


def test_state_digests_chain_from_start_to_done(make_engine) -> None:
    result = make_engine().run(ERROR_SCAN)
    records = events(result.log_path)
    start, tools, done = records[0], events(result.log_path, "tool"), records[-1]
    assert tools[0]["state_before"] == start["state_digest"]
    assert tools[1]["state_before"] == tools[0]["state_after"] != start["state_digest"]
    assert done["state_digest"] == tools[1]["state_after"] == result.state_digest


def test_noop_goal_is_one_step(make_engine) -> None:
    result = make_engine().run({"goal_id": "goal.NOOP.v1"})
    assert (result.status, result.steps) == ("done", 1)


def test_request_id_defaults_to_the_run_id(make_engine) -> None:
    result = make_engine().run({"goal_id": "goal.NOOP.v1"}, run_id="my-run")
    assert result.request_id == result.run_id == "my-run"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ({"inputs": {}}, "invalid_request"),
        ({"goal_id": "ERROR_SCAN"}, "invalid_request"),
        ({"goal_id": "goal.ERROR_SCAN.v1", "control_mode": "YOLO"}, "invalid_request"),
        ({"goal_id": "goal.ERROR_SCAN.v1", "_capabilities": {"allowed_tools": ["AID.*.v1"]}}, "invalid_request"),
        ({"goal_id": "goal.NOPE.v1"}, "unknown_goal"),
        ({"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"pattern": "x"}}, "invalid_inputs"),
        ({"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": 7}}, "invalid_inputs"),
    ],
)
def test_invalid_requests_fail_permanently_with_a_verifiable_log(make_engine, request_, reason) -> None:
    result = make_engine().run(request_)
    assert (result.status, result.reason, result.retryable) == ("failed", reason, False)
    assert result.error
    assert [r["event"] for r in events(result.log_path)] == ["start", "done"]
    assert verify_log(result.log_path).ok


def test_a_tool_error_is_retried_then_the_loop_guard_stops_the_run(make_engine) -> None:
    result = make_engine().run({**ERROR_SCAN, "inputs": {"input_path": "data/missing.log"}})
    assert (result.status, result.reason) == ("breaker", "loop_guard")
    tools = events(result.log_path, "tool")
    assert len(tools) == 2  # max_repeats = 2 for goal.ERROR_SCAN.v1
    assert all(not t["ok"] and t["status"] == TOOL_ERROR for t in tools)
    assert all(t["state_after"] == t["state_before"] for t in tools)  # a failed call changes nothing
    assert result.tool_stats["AID.ERROR_SCAN.v1"].fail == 2
    assert events(result.log_path, "breaker")[0]["reason"] == "loop_guard"
    assert verify_log(result.log_path).ok


def test_max_steps_ends_the_run(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.SHORT.v1",
        "name": "short",
        "candidate_tags": ["tag.log", "tag.report"],
        "inputs_schema": {"type": "object", "properties": {"input_path": {"type": "string"}}},
        "complete_when": {"all_ok": ["AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"]},
        "bindings": {"AID.REPORT_SUMMARY.v1": {"findings": {"ptr": "/outputs/AID.ERROR_SCAN.v1", "required": True}}},
        "budget": {"max_steps": 1},
    }
    operator_goalpack(root, goal)
    result = make_engine().run({"goal_id": "goal.SHORT.v1", "inputs": {"input_path": "data/app.log"}})
    assert (result.status, result.reason, result.steps) == ("breaker", "max_steps", 1)
    assert result.outputs.keys() == {"AID.ERROR_SCAN.v1"}


def test_a_capability_that_leaves_out_the_report_ends_in_noop(make_engine) -> None:
    request = {**ERROR_SCAN, "_capabilities": {"allowed_tools": ["AID.ERROR_SCAN.v1"]}}
    result = make_engine().run(request)
    assert (result.status, result.reason) == ("noop", "selector_noop")
    menu = events(result.log_path, "menu")[0]
    assert [e["aid"] for e in menu["entries"]] == ["AID.ERROR_SCAN.v1"]
    assert menu["refused"] == [{"aid": "AID.REPORT_SUMMARY.v1", "why": "not_allowed"}]


def test_an_empty_menu_ends_in_noop(make_engine) -> None:
    result = make_engine().run({**ERROR_SCAN, "_capabilities": {"blocked_tools": ["*"]}})
    assert (result.status, result.reason, result.steps) == ("noop", "empty_menu", 0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(APPROVAL_REQUIRED, ("asked", "tool_approval_required")), (DENIED, ("failed", "tool_denied"))],
)
def test_tool_statuses_that_end_the_run(make_engine, double, status, expected) -> None:
    double.fail["AID.ERROR_SCAN.v1"] = (status, "permission mode says no")
    result = make_engine().run(ERROR_SCAN)
    assert (result.status, result.reason) == expected
    assert "permission mode says no" in result.error


def test_a_call_that_needs_a_lease_is_recorded_for_the_operator(make_engine, double) -> None:
    double.fail["AID.ERROR_SCAN.v1"] = (LEASE_REQUIRED, "MACHINA_LEASE_ENFORCE=1")
    result = make_engine().run(ERROR_SCAN)
    assert (result.status, result.reason) == ("asked", "tool_lease_required")
    inputs = {"input_path": "data/app.log", "pattern": "ERROR"}  # as bound: the goal's default pattern too
    assert result.approvals == [
        {
            "aid": "AID.ERROR_SCAN.v1",
            "tier": 0,
            "inputs_digest": inputs_digest("AID.ERROR_SCAN.v1", inputs),
            "status": "asked",
            "inputs": inputs,
        }
    ]


def test_a_carried_lease_goes_only_to_the_call_it_was_issued_for(make_engine, double) -> None:
    inputs = {"input_path": "data/app.log", "pattern": "ERROR"}
    leases = [
        {"aid": "AID.ERROR_SCAN.v1", "inputs_digest": inputs_digest("AID.ERROR_SCAN.v1", {"input_path": "x"}),
         "token": "mlease_a_other"},
        {"aid": "AID.ERROR_SCAN.v1", "inputs_digest": inputs_digest("AID.ERROR_SCAN.v1", inputs),
         "token": "mlease_b_this"},
    ]  # fmt: skip
    engine = make_engine()
    plain = engine.run(ERROR_SCAN)
    result = engine.run({**ERROR_SCAN, "_leases": leases})
    assert result.status == "done"
    assert double.tokens[-2:] == [("AID.ERROR_SCAN.v1", "mlease_b_this"), ("AID.REPORT_SUMMARY.v1", None)]
    assert [(a["aid"], a["status"]) for a in result.approvals] == [("AID.ERROR_SCAN.v1", "spent")]
    start = events(result.log_path, "start")[0]
    assert start["request_digest"] == events(plain.log_path, "start")[0]["request_digest"]
    assert "mlease_b_this" not in Path(result.log_path).read_text()


def test_a_tool_timeout_is_an_ordinary_failure(make_engine, double) -> None:
    double.fail["AID.REPORT_SUMMARY.v1"] = (TIMEOUT, "no reply within 30 s")
    result = make_engine().run(ERROR_SCAN)
    assert (result.status, result.reason) == ("breaker", "loop_guard")
    assert result.tool_stats["AID.REPORT_SUMMARY.v1"].fail == 2
    assert result.outputs.keys() == {"AID.ERROR_SCAN.v1"}


def test_toolhost_down_fails_the_run_as_retryable(make_engine, double) -> None:
    double.down = True
    result = make_engine().run(ERROR_SCAN)
    assert (result.status, result.reason, result.retryable) == ("failed", "toolhost_unavailable", True)
    tool = events(result.log_path, "tool")[0]
    assert (tool["ok"], tool["status"]) == (False, "unavailable")
    assert verify_log(result.log_path).ok


def test_a_sandbox_error_ends_the_run_as_retryable(make_engine, double) -> None:
    double.fail["AID.ERROR_SCAN.v1"] = (SANDBOX_ERROR, "bubblewrap is required and missing")
    result = make_engine().run(ERROR_SCAN)
    assert (result.status, result.reason, result.retryable, result.steps) == ("failed", "tool_sandbox_error", True, 1)


def test_ask_supervisor_tool_ends_the_run_asked(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.ASK.v1",
        "name": "ask",
        "candidate_tags": ["tag.ask", "tag.noop"],
        "complete_when": {"all_ok": ["AID.ASK_SUP.v1", "AID.NOOP.v1"]},
    }
    operator_goalpack(root, goal)
    result = make_engine().run({"goal_id": "goal.ASK.v1"})
    assert (result.status, result.reason) == ("asked", "tool_ask_sup")


def test_an_unbound_tool_gets_the_request_inputs_it_declares(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.READ.v1",
        "name": "read",
        "candidate_tags": ["tag.file"],
        "inputs_schema": {"type": "object", "properties": {"path": {"type": "string"}, "note": {"type": "string"}}},
        "complete_when": {"all_ok": ["AID.FILE.READ.v1"]},
    }
    operator_goalpack(root, goal)
    result = make_engine().run({"goal_id": "goal.READ.v1", "inputs": {"path": "data/app.log", "note": "x"}})
    assert result.status == "done"
    assert events(result.log_path, "tool")[0]["inputs"] == {"path": "data/app.log"}


def test_success_hook_hears_of_each_tool_of_a_done_run(make_engine) -> None:
    heard: list[tuple[str, str]] = []
    engine = make_engine()
    engine.on_success = lambda aid, text: heard.append((aid, text))
    engine.run(ERROR_SCAN)
    engine.run({**ERROR_SCAN, "inputs": {"input_path": "data/missing.log"}})  # not done: not reported
    assert [aid for aid, _ in heard] == ["AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"]
    assert "Scan a log file" in heard[0][1]


def test_a_failing_success_hook_does_not_fail_the_run(make_engine) -> None:
    engine = make_engine()

    def hook(aid: str, text: str) -> None:
        raise RuntimeError("embed service down")

    engine.on_success = hook
    assert engine.run(ERROR_SCAN).status == "done"


def test_result_is_json_serialisable(make_engine) -> None:
    result = make_engine().run(ERROR_SCAN)
    decoded = json.loads(json.dumps(result.to_dict()))
    assert decoded["tool_stats"]["AID.ERROR_SCAN.v1"]["ok"] == 1
    assert decoded["status"] == "done"


def test_a_run_with_fsync_on_completes_and_verifies(make_engine) -> None:
    # Only observable as "it still works and verifies": fsync has no visible effect on a healthy disk.
    result = make_engine(MACHINA_WAL_FSYNC="1").run(ERROR_SCAN)
    assert result.status == "done" and verify_log(result.log_path).ok


def test_an_unsafe_run_id_is_refused(make_engine) -> None:
    with pytest.raises(ValueError, match="safe file-name"):
        make_engine().run(ERROR_SCAN, run_id="../../etc/x")


def test_tool_calls_feed_the_metrics_figures(make_engine, double) -> None:
    from machina.metrics.figures import Figures

    double.fail["AID.REPORT_SUMMARY.v1"] = (TIMEOUT, "no reply within 30 s")
    result = make_engine().run(ERROR_SCAN)
    assert [(aid, ok) for aid, ok, _ in result.tool_calls] == [
        ("AID.ERROR_SCAN.v1", True),
        ("AID.REPORT_SUMMARY.v1", False),
        ("AID.REPORT_SUMMARY.v1", False),
    ]
    figures = Figures()
    figures.record_job(result.ok, result.tool_calls)
    assert (figures.jobs_fail, figures.tools["AID.REPORT_SUMMARY.v1"].fail, figures.tools["AID.ERROR_SCAN.v1"].ok) == (
        1,
        2,
        1,
    )


def test_the_jobs_capabilities_reach_the_toolhost(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.FOLLOW_UP.v1",
        "name": "follow_up",
        "candidate_tags": ["tag.enqueue"],
        "inputs_schema": {"type": "object", "properties": {"request": {"type": "object"}}},
        "complete_when": {"all_ok": ["AID.QUEUE.ENQUEUE.v1"]},
    }
    operator_goalpack(root, goal)
    caps = {"allowed_tools": ["AID.QUEUE.*"], "blocked_tools": ["AID.SHELL.*"]}
    request = {"goal_id": "goal.FOLLOW_UP.v1", "inputs": {"request": {"goal_id": "goal.NOOP.v1"}}}
    limited = make_engine().run({**request, "_capabilities": caps})
    assert limited.outputs["AID.QUEUE.ENQUEUE.v1"]["capabilities"] == caps
    unlimited = make_engine().run(request)
    assert unlimited.outputs["AID.QUEUE.ENQUEUE.v1"]["capabilities"] is None

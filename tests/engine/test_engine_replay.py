"""Strict replay: passes on every shipped example, fails on tampered logs and changed runs, never asks a policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, EXAMPLES, TAMPERS, operator_goalpack

from machina.audit.replay import strict_replay

EXAMPLE_REQUESTS = sorted((EXAMPLES / "requests").glob("*.json"))


@pytest.fixture
def example_policy(root: Path) -> str:
    shutil.copy(EXAMPLES / "policies" / "first_pending.py", root / "policies")
    return "python3 policies/first_pending.py"


def test_there_are_examples() -> None:
    assert len(EXAMPLE_REQUESTS) >= 4


@pytest.mark.parametrize("path", EXAMPLE_REQUESTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("key", [None, "example-audit-key"])
def test_strict_replay_passes_on_every_shipped_example(make_engine, example_policy, path: Path, key) -> None:
    request = json.loads(path.read_text())
    env = {"MACHINA_POLICY_CMD": example_policy, **({"MACHINA_AUDIT_KEY": key} if key else {})}
    engine = make_engine(**env)
    result = engine.run(request)
    assert result.status == "done", result
    report = strict_replay(request, result.log_path, engine, key)
    assert report.ok, report.problems
    assert report.result is not None and report.result.state_digest == result.state_digest


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_strict_replay_fails_on_a_tampered_log(make_engine, case: str) -> None:
    engine = make_engine()
    result = engine.run(ERROR_SCAN)
    tamper, expected = TAMPERS[case]
    tamper(Path(result.log_path))
    report = strict_replay(ERROR_SCAN, result.log_path, engine, None)
    assert not report.ok and any(expected in p for p in report.problems), report.problems
    assert report.result is None  # nothing was re-run


def test_strict_replay_fails_with_the_wrong_key(make_engine) -> None:
    engine = make_engine(MACHINA_AUDIT_KEY="right")
    result = engine.run(ERROR_SCAN)
    assert not strict_replay(ERROR_SCAN, result.log_path, engine, "wrong").ok


def test_strict_replay_refuses_another_request(make_engine) -> None:
    engine = make_engine()
    result = engine.run(ERROR_SCAN)
    other = {**ERROR_SCAN, "inputs": {"input_path": "data/app.log", "pattern": "WARN"}}
    report = strict_replay(other, result.log_path, engine, None)
    assert report.problems == ["the request is not the one this log ran (request digests differ)"]


def test_a_tool_that_is_not_deterministic_is_answered_from_the_log(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.METRICS.v1",
        "name": "metrics",
        "candidate_tags": ["tag.metrics"],
        "complete_when": {"all_ok": ["AID.PROC.SELF_METRICS.v1"]},
    }
    operator_goalpack(root, goal)
    engine = make_engine()
    request = {"goal_id": "goal.METRICS.v1"}
    result = engine.run(request)
    report = strict_replay(request, result.log_path, engine, None)
    assert report.ok, report.problems
    assert (report.rerun, report.reused) == (0, 1)


def test_a_tool_with_side_effects_is_not_run_again(make_engine, root: Path) -> None:
    engine = make_engine()
    request = {**ERROR_SCAN, "inputs": {"input_path": "data/app.log", "report_path": "reports/r.md"}}
    result = engine.run(request)
    (root / "reports" / "r.md").unlink()
    report = strict_replay(request, result.log_path, engine, None)
    assert report.ok, report.problems
    assert (report.rerun, report.reused) == (1, 1)  # the scan ran again; the report came from the log
    assert not (root / "reports" / "r.md").exists()


def test_a_forged_output_that_keeps_the_chain_is_caught(make_engine) -> None:
    # Someone who can rewrite the whole unkeyed log changes what the report step returned; the chain is
    # recomputed, so only replay can tell: the logged output no longer leads to the logged state digest.
    from engine_support import rewrite_chain

    engine = make_engine()
    result = engine.run(ERROR_SCAN)
    path = Path(result.log_path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[5]["diff"][0]["value"]["summary"] = "all is well"
    rewrite_chain(path, records)
    report = strict_replay(ERROR_SCAN, str(path), engine, None)
    assert report.problems[0].startswith("step 2: AID.REPORT_SUMMARY.v1 ok=True led to state")


def test_strict_replay_reports_a_changed_input_file(make_engine, root: Path) -> None:
    engine = make_engine()
    result = engine.run(ERROR_SCAN)
    with open(root / "data" / "app.log", "a") as handle:
        handle.write("2026-01-05T11:00:00Z ERROR one more\n")
    report = strict_replay(ERROR_SCAN, result.log_path, engine, None)
    assert not report.ok and report.problems[0].startswith("step 1: AID.ERROR_SCAN.v1")


def test_strict_replay_reports_a_changed_goal(make_engine, root: Path) -> None:
    goal = {
        "goal_id": "goal.NOTE.v1",
        "name": "note",
        "candidate_tags": ["tag.noop"],
        "complete_when": {"all_ok": ["AID.NOOP.v1"]},
    }
    path = operator_goalpack(root, goal)
    request = {"goal_id": "goal.NOTE.v1"}
    result = make_engine().run(request)
    path.write_text(json.dumps({"pack": "test", "goals": [{**goal, "description": "changed"}]}))
    report = strict_replay(request, result.log_path, make_engine(), None)
    assert report.problems == ["the goal manifest changed since the run (goal digests differ)"]


def test_strict_replay_reproduces_failures_and_breakers(make_engine) -> None:
    engine = make_engine()
    request = {**ERROR_SCAN, "inputs": {"input_path": "data/missing.log"}}
    result = engine.run(request)
    assert result.reason == "loop_guard"
    assert strict_replay(request, result.log_path, engine, None).ok


def test_strict_replay_never_asks_a_live_policy(make_engine, driver, witness) -> None:
    cmd = driver(
        "counting.py",
        witness.python()
        + "print('<PICK><SID0002><END>' if json.load(open(sys.argv[1]))['completed'] else '<PICK><SID0001><END>')\n",
    )
    engine = make_engine(MACHINA_POLICY_CMD=cmd)
    request = {**ERROR_SCAN, "control_mode": "POLICY_ONLY"}
    result = engine.run(request)
    assert result.status == "done" and len(witness.messages()) == 2
    report = strict_replay(request, result.log_path, engine, None)
    assert report.ok, report.problems
    assert witness.messages() == []  # no new start
    assert {e["source"] for e in report.replayed if e["event"] == "selection"} == {"REPLAY"}


def test_strict_replay_applies_the_logged_patch(make_engine, driver) -> None:
    reply = '<PICK><SID0001><INP>{"pattern": "WARN"}</INP><END>'
    cmd = driver(
        "patch.py", f"print({reply!r} if not json.load(open(sys.argv[1]))['completed'] else '<PICK><SID0002><END>')\n"
    )
    engine = make_engine(MACHINA_POLICY_CMD=cmd)
    request = {**ERROR_SCAN, "control_mode": "BLENDED"}
    result = engine.run(request)
    assert result.outputs["AID.ERROR_SCAN.v1"]["pattern"] == "WARN"
    assert strict_replay(request, result.log_path, engine, None).ok

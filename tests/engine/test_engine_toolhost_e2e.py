"""End to end through the real machina-toolhost: ``machina run`` of every example (goal.ERROR_SCAN.v1 scans
*and* reports), then strict replay and audit, all through a shell."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from engine_support import EXAMPLES, operator_goalpack

from tests.conftest import bin_env, run_bin


@pytest.fixture
def env(root: Path) -> dict[str, str]:
    shutil.copy(EXAMPLES / "policies" / "first_pending.py", root / "policies")
    return bin_env(
        MACHINA_ROOT=str(root),
        MACHINA_POLICY_CMD="python3 policies/first_pending.py",
        MACHINA_POLICY_ALLOWED_SCRIPT_ROOT=str(root / "policies"),
    )


def test_error_scan_scans_and_reports_through_the_toolhost(root: Path, toolhost: str, env: dict) -> None:
    request = str(EXAMPLES / "requests" / "error_scan.json")
    ran = run_bin("machina", "run", "--json", request, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "done"
    assert result["outputs"]["AID.ERROR_SCAN.v1"]["matches"] == 3
    report = root / "reports" / "app_errors.md"
    assert "database connection refused (attempt 2)" in report.read_text()
    tools = [json.loads(line) for line in Path(result["log_path"]).read_text().splitlines()]
    assert [(t["aid"], t["ok"]) for t in tools if t["event"] == "tool"] == [
        ("AID.ERROR_SCAN.v1", True),
        ("AID.REPORT_SUMMARY.v1", True),
    ]
    strict = run_bin("machina", "replay", "--strict", request, result["log_path"], env=env)
    assert strict.returncode == 0, strict.stdout + strict.stderr


@pytest.mark.parametrize("example", sorted((EXAMPLES / "requests").glob("*.json")), ids=lambda p: p.stem)
def test_every_example_runs_and_replays_strictly(root: Path, toolhost: str, env: dict, example: Path) -> None:
    ran = run_bin("machina", "run", "--json", str(example), env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = json.loads(ran.stdout)["log_path"]
    strict = run_bin("machina", "replay", "--strict", str(example), log, env=env)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert run_bin("machina", "audit", "verify", env=env).returncode == 0
    assert os.path.getsize(log) > 0


def test_a_job_cannot_enqueue_a_job_wider_than_itself(root: Path, toolhost: str, env: dict, tmp_path: Path) -> None:
    goal = {
        "goal_id": "goal.FOLLOW_UP.v1",
        "name": "follow_up",
        "candidate_tags": ["tag.enqueue"],
        "inputs_schema": {"type": "object", "properties": {"request": {"type": "object"}}},
        "complete_when": {"all_ok": ["AID.QUEUE.ENQUEUE.v1"]},
    }
    operator_goalpack(root, goal)
    wide = {"goal_id": "goal.NOOP.v1", "_capabilities": {"allowed_tools": ["*"]}}
    request = {
        "goal_id": "goal.FOLLOW_UP.v1",
        "inputs": {"request": wide},
        "_capabilities": {"allowed_tools": ["AID.QUEUE.*", "AID.NOOP.v1"], "blocked_tools": ["AID.SHELL.*"]},
    }
    path = tmp_path / "follow_up.json"
    path.write_text(json.dumps(request))
    ran = run_bin("machina", "run", "--json", str(path), env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (queued,) = (root / "queue" / "inbox").iterdir()
    caps = json.loads(queued.read_text())["_capabilities"]
    assert caps["allowed_tools"] == ["AID.QUEUE.*", "AID.NOOP.v1"]
    assert caps["blocked_tools"] == ["AID.SHELL.*"]


@pytest.mark.parametrize(
    "inputs, refusal",
    [
        ({"input_path": "logs/machina-up.log"}, "logs/ belongs to the suite"),
        ({"input_path": "memory/notes.jsonl"}, "memory/ belongs to the suite"),
        ({"input_path": "data/app.log", "report_path": "policies/first_pending.py"}, "policies/ is not writable"),
    ],
)
def test_d3_a_job_naming_the_suites_directories_is_refused_clearly(
    root: Path, toolhost: str, env: dict, tmp_path: Path, inputs: dict, refusal: str
) -> None:
    for planted in ("logs/machina-up.log", "memory/notes.jsonl"):
        (root / planted).write_text("planted ERROR\n")
    before = (root / "policies" / "first_pending.py").read_text()
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"goal_id": "goal.ERROR_SCAN.v1", "inputs": inputs}))
    ran = run_bin("machina", "run", "--json", str(path), env=env)
    result = json.loads(ran.stdout)
    assert result["status"] != "done", result
    tools = [json.loads(line) for line in Path(result["log_path"]).read_text().splitlines()]
    errors = [t.get("error") or "" for t in tools if t["event"] == "tool" and not t["ok"]]
    assert any(refusal in error for error in errors), errors
    assert (root / "policies" / "first_pending.py").read_text() == before
    assert "planted" not in ran.stdout

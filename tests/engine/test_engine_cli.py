"""``machina run``, ``replay``, ``audit verify`` and ``cts`` driven through a shell, with their exit codes.

Tools run in a real machina-toolhost started for each test (the ``toolhost`` fixture).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from engine_support import EXAMPLES

from tests.conftest import bin_env, run_bin

HERE = Path(__file__).resolve().parent


@pytest.fixture
def env(root: Path) -> dict[str, str]:
    return bin_env(MACHINA_ROOT=str(root), MACHINA_POLICY_ALLOWED_SCRIPT_ROOT=str(root / "policies"))


def request_file(tmp_path: Path, request: object, name: str = "request.json") -> str:
    path = tmp_path / name
    path.write_text(request if isinstance(request, str) else json.dumps(request))
    return str(path)


def only_log(root: Path) -> Path:
    (log,) = (root / "logs").glob("run_*.jsonl")
    return log


def test_run_error_scan_then_replay_and_audit(root: Path, toolhost: str, env: dict, tmp_path: Path) -> None:
    request = str(EXAMPLES / "requests" / "error_scan.json")
    ran = run_bin("machina", "run", request, env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("done (complete) after 2 step(s): goal.ERROR_SCAN.v1")
    assert "tool     AID.REPORT_SUMMARY.v1 ok=1 fail=0" in ran.stdout
    assert (root / "reports" / "app_errors.md").exists()
    log = only_log(root)

    verified = run_bin("machina", "replay", str(log), env=env)
    assert (verified.returncode, verified.stdout.strip()) == (0, f"{log}: ok (7 events, done)")
    strict = run_bin("machina", "replay", "--strict", request, str(log), env=env)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert "same states and end (done); re-ran 1 read-only tool call(s), reused 1 logged" in strict.stdout
    audit = run_bin("machina", "audit", "verify", env=env)
    assert (audit.returncode, audit.stdout.strip()) == (0, "1 log(s) verified, 0 with problems")

    log.write_text(log.read_text().replace('"matches":3', '"matches":0'))
    assert run_bin("machina", "replay", str(log), env=env).returncode == 1
    strict = run_bin("machina", "replay", "--strict", request, str(log), env=env)
    assert strict.returncode == 1 and "chain hash mismatch" in strict.stdout
    audit = run_bin("machina", "audit", "verify", "--json", env=env)
    assert audit.returncode == 1
    assert json.loads(audit.stdout)["ok"] is False


def test_run_json_output(toolhost: str, env: dict) -> None:
    ran = run_bin("machina", "run", "--json", "--run-id", "fixed-id", str(EXAMPLES / "requests" / "noop.json"), env=env)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert (result["run_id"], result["status"], result["request_id"]) == ("fixed-id", "done", "example-noop")
    assert result["tool_stats"] == {
        "AID.NOOP.v1": {"ok": 1, "fail": 0, "duration_ms_total": pytest.approx(0, abs=1000)}
    }
    assert result["log_path"].endswith("logs/run_fixed-id.jsonl")


def test_run_reads_stdin_and_uses_root_option(root: Path, toolhost: str) -> None:
    ran = run_bin("machina", "run", "--root", str(root), "-", input='{"goal_id": "goal.NOOP.v1"}')
    assert ran.returncode == 0, ran.stderr


def test_run_exit_codes(root: Path, toolhost: str, env: dict, tmp_path: Path) -> None:
    def code(request: object) -> int:
        return run_bin("machina", "run", request_file(tmp_path, request), env=env).returncode

    assert code("{not json") == 65
    assert code("[1, 2]") == 65
    assert code({"goal_id": "goal.NOPE.v1"}) == 65
    assert code({"goal_id": "goal.ERROR_SCAN.v1", "inputs": {}}) == 65
    assert code({"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/none.log"}}) == 1
    assert run_bin("machina", "run", str(tmp_path / "missing.json"), env=env).returncode == 66
    assert (
        run_bin("machina", "run", "--run-id", "../x", str(EXAMPLES / "requests" / "noop.json"), env=env).returncode
        == 64
    )
    bad_config = bin_env(MACHINA_ROOT=str(root), MACHINA_POLICY_TIMEOUT_MS="soon")
    assert run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=bad_config).returncode == 78


def test_run_without_a_toolhost_exits_69(root: Path, env: dict) -> None:
    ran = run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=env)
    assert ran.returncode == 69
    assert "machina-toolhost is not running" in ran.stderr
    assert not list((root / "logs").iterdir())  # nothing was started


def test_run_against_a_toolhost_that_goes_away_exits_69(root: Path, env: dict) -> None:
    (root / "run" / "toolhost.sock").write_text("")  # a stale socket file, nobody listening
    ran = run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=env)
    assert ran.returncode == 69
    assert "toolhost_unavailable" in ran.stdout
    assert run_bin("machina", "audit", "verify", env=env).returncode == 0  # the failed run is still audited


def test_audit_verify_with_a_key(root: Path, toolhost: str, env: dict) -> None:
    keyed = {**env, "MACHINA_AUDIT_KEY": "cron-key"}
    assert run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=keyed).returncode == 0
    assert run_bin("machina", "audit", "verify", env=keyed).returncode == 0
    unkeyed = run_bin("machina", "audit", "verify", env=env)
    assert unkeyed.returncode == 1 and "set MACHINA_AUDIT_KEY" in unkeyed.stdout
    wrong = run_bin("machina", "audit", "verify", env={**env, "MACHINA_AUDIT_KEY": "other"})
    assert wrong.returncode == 1 and "wrong MACHINA_AUDIT_KEY" in wrong.stdout
    assert "cron-key" not in wrong.stdout + wrong.stderr


def test_audit_verify_named_logs_and_missing_ones(root: Path, toolhost: str, env: dict, tmp_path: Path) -> None:
    run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=env)
    log = only_log(root)
    assert run_bin("machina", "audit", "verify", str(log), env=env).returncode == 0
    assert run_bin("machina", "audit", "verify", str(tmp_path / "nope.jsonl"), env=env).returncode == 66
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))  # the run "died" before done
    assert run_bin("machina", "audit", "verify", env=env).returncode == 1
    assert run_bin("machina", "audit", "verify", "--allow-incomplete", env=env).returncode == 0


def test_replay_exit_codes(root: Path, toolhost: str, env: dict, tmp_path: Path) -> None:
    request = str(EXAMPLES / "requests" / "noop.json")
    run_bin("machina", "run", request, env=env)
    log = str(only_log(root))
    assert run_bin("machina", "replay", str(tmp_path / "nope.jsonl"), env=env).returncode == 66
    other = request_file(tmp_path, {"goal_id": "goal.NOOP.v1", "request_id": "another"})
    differs = run_bin("machina", "replay", "--strict", other, log, env=env)
    assert differs.returncode == 1 and "request digests differ" in differs.stdout
    assert run_bin("machina", "replay", "--strict", request_file(tmp_path, "{"), log, env=env).returncode == 65
    as_json = run_bin("machina", "replay", "--json", log, env=env)
    assert json.loads(as_json.stdout) == {"log": log, "ok": True, "problems": [], "strict": False}


def test_cts_through_the_shell(root: Path, env: dict, tmp_path: Path) -> None:
    clean = run_bin("machina", "cts", env=env)
    assert clean.returncode == 0 and clean.stdout == ""
    pack = root / "goalpacks" / "mine"
    pack.mkdir()
    (pack / "manifest.json").write_text(
        json.dumps(
            {
                "pack": "mine",
                "goals": [
                    {
                        "goal_id": "goal.BROKEN.v1",
                        "name": "broken",
                        "candidate_tags": ["tag.log"],
                        "complete_when": {"all_ok": ["AID.MISSING.v1"]},
                    }
                ],
            }
        )
    )
    found = run_bin("machina", "cts", env=env)
    assert found.returncode == 1
    assert found.stdout.splitlines() == [
        f"{pack}/manifest.json: CTS204 goal.BROKEN.v1: complete_when: AID.MISSING.v1: no tool is or carries it"
    ]
    by_dir = run_bin("machina", "cts", "--json", str(pack), env=env)
    assert by_dir.returncode == 1 and json.loads(by_dir.stdout)["code"] == "CTS204"
    assert run_bin("machina", "cts", str(tmp_path / "nope.json"), env=env).returncode == 66
    examples_ok = run_bin("machina", "cts", str(EXAMPLES / "requests" / "noop.json"), env=env)
    assert examples_ok.returncode == 1 and "CTS003" in examples_ok.stdout


def test_help_texts() -> None:
    for command in (["run"], ["replay"], ["audit", "verify"], ["cts"]):
        shown = run_bin("machina", *command, "--help")
        assert shown.returncode == 0 and "Exit status" in shown.stdout, command


def test_example_policy_through_machina_run(root: Path, toolhost: str, env: dict) -> None:
    shutil.copy(EXAMPLES / "policies" / "first_pending.py", root / "policies")
    policy_env = {**env, "MACHINA_POLICY_CMD": "python3 policies/first_pending.py"}
    ran = run_bin("machina", "run", "--json", str(EXAMPLES / "requests" / "error_scan_blended.json"), env=policy_env)
    assert ran.returncode == 0, ran.stderr
    log = json.loads(ran.stdout)["log_path"]
    sources = {json.loads(line).get("source") for line in Path(log).read_text().splitlines()} - {None}
    assert sources == {"POLICY"}


def test_strict_replay_of_a_bad_log_needs_no_toolhost(make_engine, env: dict, tmp_path: Path) -> None:
    request = {"goal_id": "goal.NOOP.v1"}
    log = Path(make_engine().run(request).log_path)
    log.write_text(log.read_text().replace('"status":"ok"', '"status":"OK"'))
    ran = run_bin("machina", "replay", "--strict", request_file(tmp_path, request), str(log), env=env)
    assert ran.returncode == 1 and "chain hash mismatch" in ran.stdout


def test_run_without_a_logs_directory_exits_73(root: Path, toolhost: str, env: dict) -> None:
    (root / "logs").rmdir()
    ran = run_bin("machina", "run", str(EXAMPLES / "requests" / "noop.json"), env=env)
    assert ran.returncode == 73 and "cannot write the run log" in ran.stderr

"""machina-autonomic as a process, the CLI, the regression gate, and crashes: kill -9 during a state write,
appends racing a rewrite."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machina.autonomic.gate import parse_pass_count
from machina.autonomic.logcaps import halve
from machina.autonomic.state import load_state
from machina.autonomic.trust import prune
from machina.clock import FakeClock, SystemClock
from machina.memory.streams import append
from tests.conftest import BIN, bin_env

EXP = {"user_request": "r", "tool_used": "AID.ERROR_SCAN.v1", "success": True, "elapsed_sec": 0.1}


def machina(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "machina"), *args],
        env=bin_env(MACHINA_ROOT=str(root), **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- the regression gate -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "passed"),
    [
        ("===== 12 passed, 1 skipped in 3.21s =====\n", 12),
        ("== 3 failed, 9 passed, 2 warnings in 1.00s ==\n", 9),
        ("== 2 failed in 0.5s ==\n", 0),
        ("== no tests ran in 0.01s ==\n", None),
        ("ok: 7 passed, 0 failed\n", 7),
        ("7 passed, 2 failed, 1 skipped\n", 7),
        ("all good!\n", None),
        ("", None),
    ],
)
def test_pass_counts_are_read_from_pytest_or_the_plain_line(output: str, passed: int | None) -> None:
    assert parse_pass_count(output) == passed


def _gate(root: Path, cmd: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"MACHINA_REGRESSION_CMD": cmd} if cmd is not None else {}
    return machina(root, "autonomic", "gate", **extra, **env)


def test_the_gate_fails_closed_and_keeps_nothing(machina_root: Path, tmp_path: Path) -> None:
    baseline = machina_root / "memory" / "regression_baseline.json"
    before = sorted(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("machina-gate*"))
    result = _gate(machina_root, None)
    assert result.returncode == 1 and "MACHINA_REGRESSION_CMD is not set" in result.stdout
    assert _gate(machina_root, "/nonexistent/run-tests").returncode == 1
    slow = _gate(machina_root, f"{sys.executable} -c 'import time; time.sleep(30)'", MACHINA_REGRESSION_TIMEOUT_S="1")
    assert slow.returncode == 1 and "ran past 1 s" in slow.stdout
    garbage = _gate(machina_root, "echo everything is fine, trust me")
    assert garbage.returncode == 1 and "no pass count" in garbage.stdout
    assert not baseline.exists()
    accepted = _gate(machina_root, "echo 5 passed, 0 failed")
    assert accepted.returncode == 0 and "accepted: 5 passed (baseline 0)" in accepted.stdout
    assert json.loads(baseline.read_text())["passed"] == 5
    fewer = _gate(machina_root, "echo 4 passed, 1 failed")
    assert fewer.returncode == 1 and "fewer than the baseline 5" in fewer.stdout
    assert json.loads(baseline.read_text())["passed"] == 5  # the baseline never falls
    after = sorted(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("machina-gate*"))
    assert after == before  # no scratch copy left behind


def test_the_gate_runs_in_a_scratch_copy_without_the_suites_secrets(machina_root: Path) -> None:
    (machina_root / "memory" / "notes.jsonl").write_text('{"text": "x"}\n')
    probe = (
        f"{sys.executable} -c \"import os,sys; root=os.environ['MACHINA_ROOT']; "
        f"ok = root != '{machina_root}' and os.path.exists(root + '/memory/notes.jsonl') "
        "and 'MACHINA_API_TOKEN' not in os.environ; open(root + '/memory/notes.jsonl', 'a').write('scribble'); "
        "print(('1' if ok else '0') + ' passed, 0 failed')\""
    )
    result = _gate(machina_root, probe, MACHINA_API_TOKEN="s3cret-token-value")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (machina_root / "memory" / "notes.jsonl").read_text() == '{"text": "x"}\n'  # the scratch took it


# --- the CLI and the daemon ----------------------------------------------------------------------------


def test_run_l1_writes_a_tool_stats_insight_from_recorded_experiences(machina_root: Path) -> None:
    for _ in range(6):
        append(str(machina_root / "memory"), "experiences", EXP)
    result = machina(machina_root, "autonomic", "run", "L1")
    assert result.returncode == 0, result.stderr
    (line,) = (machina_root / "memory" / "insights.jsonl").read_text().splitlines()
    assert json.loads(line)["record"]["type"] == "tool_stats"
    no_model = machina(machina_root, "autonomic", "run", "L3")  # no model configured here
    assert no_model.returncode == 69 and "needs model" in no_model.stderr, no_model.stderr
    assert machina(machina_root, "autonomic", "run", "L9").returncode == 64
    status = json.loads(machina(machina_root, "autonomic", "status", "--json").stdout)
    assert status["levels"]["L1"]["runs"] == 1 and status["levels"]["L3"]["runs"] == 0
    assert status["running"] is False


def test_run_l2_enqueues_probe_jobs_through_the_queue_and_collects_nothing_yet(machina_root: Path) -> None:
    result = machina(machina_root, "autonomic", "run", "L2")
    assert result.returncode == 0, result.stderr
    assert "enqueued batch 1" in result.stdout
    inbox = sorted(p.name for p in (machina_root / "queue" / "inbox").iterdir())
    assert len(inbox) == 2, inbox
    again = machina(machina_root, "autonomic", "run", "L2")  # nothing ran them: no second batch piles up
    assert "2 probe(s) still running" in again.stdout, again.stdout
    assert len(list((machina_root / "queue" / "inbox").iterdir())) == 2


def test_approve_all_ask_under_prod_refuses_to_start(machina_root: Path) -> None:
    result = subprocess.run(
        [str(BIN / "machina-autonomic")],
        env=bin_env(MACHINA_ROOT=str(machina_root), MACHINA_PROFILE="prod", MACHINA_AUTONOMIC_APPROVE_ALL_ASK="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78 and "refused under MACHINA_PROFILE=prod" in result.stderr


def test_ask_tools_are_not_approved_unattended_by_default() -> None:
    from machina import config

    cfg = config.load({"MACHINA_ENV_FILE": "/dev/null"})
    assert cfg["MACHINA_AUTONOMIC_APPROVE_ALL_ASK"] is False and cfg["MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS"] == ()


def test_the_daemon_beats_saves_its_state_on_sigterm_and_removes_its_pid_file(machina_root: Path) -> None:
    for _ in range(6):
        append(str(machina_root / "memory"), "experiences", EXP)
    proc = subprocess.Popen(
        [str(BIN / "machina-autonomic")],
        env=bin_env(MACHINA_ROOT=str(machina_root)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    pidfile = machina_root / "run" / "autonomic.pid"
    try:
        wait_for(lambda: (machina_root / "memory" / "insights.jsonl").exists() and pidfile.exists())
        assert int(pidfile.read_text()) == proc.pid
        status = json.loads(machina(machina_root, "autonomic", "status", "--json").stdout)
        assert status["running"] is True and status["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not pidfile.exists()
    state = load_state(str(machina_root / "state"))
    assert state.level("L1").runs == 1 and state.level("L4").runs == 1


# --- crashes and races ---------------------------------------------------------------------------------

_WRITER = """
import sys
from machina.autonomic.state import AutonomicState, save_state
state = AutonomicState()
n = 0
while True:
    n += 1
    state.heartbeats = n
    state.level("L1").last_outcome = "x" * (n % 5000)
    save_state(sys.argv[1], state)
    if n == 5:
        print("ready", flush=True)
"""


def test_kill_9_during_state_writes_leaves_a_readable_state(machina_root: Path) -> None:
    state_dir = str(machina_root / "state")
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, state_dir], stdout=subprocess.PIPE, text=True, env=bin_env()
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.05)
        proc.kill()
        proc.wait()
        assert load_state(state_dir).heartbeats >= 5  # the old or the new state, never a torn one
        assert not (machina_root / "state" / "autonomic_state.json.corrupt").exists()
    leftovers = [n for n in os.listdir(state_dir) if n.endswith(".tmp")]
    assert len(leftovers) <= 3  # a killed writer may leave its temporary file, never a broken state


def _append_forever(memory: str, count: int) -> None:
    for i in range(count):
        append(memory, "experiences", {**EXP, "elapsed_sec": float(i)})


def test_appends_racing_pruning_and_halving_are_never_lost(machina_root: Path) -> None:
    memory = str(machina_root / "memory")
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_append_forever, args=(memory, 300)) for _ in range(2)]
    for w in writers:
        w.start()
    clock = SystemClock()
    halved_to: list[str] = []
    while any(w.is_alive() for w in writers):
        if os.path.exists(os.path.join(memory, "experiences.jsonl")):
            prune(memory, "experiences", clock)  # prunes nothing (all fresh), but rewrites the stream
            halved_to.append(halve(os.path.join(memory, "experiences.jsonl"), FakeClock()).archived_to)
    for w in writers:
        w.join()
        assert w.exitcode == 0
    total = len((machina_root / "memory" / "experiences.jsonl").read_text().splitlines())
    total += sum(len(Path(p).read_text().splitlines()) for p in set(halved_to))
    assert total == 600

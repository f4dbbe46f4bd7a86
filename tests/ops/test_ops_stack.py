"""ops_detect / ops_kill / ops_start / ops_restart / ops_healthcheck: found by pid file, never by name;
nothing changes without --apply; a pid file naming someone else's process is never signalled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machina.up.pidfiles import read_pidfile
from tests.conftest import bin_env
from tests.ops.supervised import SupervisedSuite, alive, script, standin


@pytest.fixture
def running(tmp_path, machina_root):
    """A supervised stand-in suite whose runtime dir is the root's (as machina up would use it)."""
    grandchild = tmp_path / "grandchild.pid"
    suite = SupervisedSuite(tmp_path, [standin("worker-1", "--grandchild", str(grandchild)), standin("worker-2")])
    suite.runtime_dir = machina_root / "run"
    suite.start().wait_ready()
    suite.seen_pids.add(int(grandchild.read_text()))
    yield suite
    suite.close()


def env_for(root: Path) -> dict[str, str]:
    return bin_env(MACHINA_ROOT=str(root))


def test_detect_writes_a_snapshot(running, machina_root) -> None:
    result = script("ops_detect.sh", env=env_for(machina_root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "manager: machina up" in result.stdout
    snap = json.loads((machina_root / "state" / "ops" / "pids.current.json").read_text())
    assert snap["manager"] == "machina up"
    assert snap["supervisor"]["pid"] == running.proc.pid
    assert {p["name"]: p["pid"] for p in snap["processes"]} == {
        "worker-1": running.pid_of("worker-1"),
        "worker-2": running.pid_of("worker-2"),
    }


def test_kill_is_a_dry_run_without_apply(running, machina_root) -> None:
    for args in ((), ("--dry-run",)):
        result = script("ops_kill.sh", *args, env=env_for(machina_root))
        assert result.returncode == 0
        assert f"would: SIGTERM machina-up (pid {running.proc.pid})" in result.stdout
        assert "dry run: nothing changed" in result.stderr
    assert running.proc.poll() is None
    assert all(alive(p) for p in running.seen_pids)


def test_kill_apply_stops_everything(running, machina_root) -> None:
    result = script("ops_kill.sh", "--apply", "--timeout", "30", env=env_for(machina_root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert running.wait_exit(timeout=30) == 0
    assert not [p for p in running.seen_pids if alive(p)]
    assert script("ops_detect.sh", env=env_for(machina_root)).returncode == 69


def test_a_pid_file_naming_another_process_is_never_signalled(machina_root) -> None:
    """A stale pid file whose pid was reused by an unrelated process: removed, the process left alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (machina_root / "run" / "worker-1.pid").write_text(f"{bystander.pid}\n")
        (machina_root / "run" / "mystery.pid").write_text(f"{bystander.pid}\n")
        detect = script("ops_detect.sh", env=env_for(machina_root))
        assert detect.returncode == 69 and "stale pid file" in detect.stdout
        result = script("ops_kill.sh", "--apply", env=env_for(machina_root))
        assert result.returncode == 0, result.stdout + result.stderr
        assert bystander.poll() is None
        assert not (machina_root / "run" / "worker-1.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_healthcheck_writes_the_report_and_exits_69_when_down(machina_root) -> None:
    result = script("ops_healthcheck.sh", env=env_for(machina_root))
    assert result.returncode == 69
    report = json.loads((machina_root / "state" / "ops" / "health.report.json").read_text())
    assert report["ok"] is False and report["manager"] == "none"


def test_healthcheck_of_a_running_suite(running, machina_root, tmp_path) -> None:
    out = tmp_path / "health.json"
    result = script("ops_healthcheck.sh", "--output", str(out), env=env_for(machina_root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(out.read_text())["ok"] is True


def test_start_and_restart_are_dry_runs_without_apply(machina_root) -> None:
    start = script("ops_start.sh", env=env_for(machina_root))
    assert start.returncode == 0 and "would start: " in start.stdout and " up --root " in start.stdout
    restart = script("ops_restart.sh", "--dry-run", env=env_for(machina_root))
    assert restart.returncode == 0 and "would start: " in restart.stdout
    assert not (machina_root / "run" / "machina-up.pid").exists()
    assert script("ops_restart.sh", "--dry-run", "--apply", env=env_for(machina_root)).returncode == 64


def test_start_apply_runs_machina_up_in_the_background_and_kill_stops_it(machina_root) -> None:
    """ops_start --apply starts the real `machina up`; ops_kill --apply takes it down with its children."""
    env = env_for(machina_root)
    pidfile = str(machina_root / "run" / "machina-up.pid")
    supervisor = None
    try:
        start = script("ops_start.sh", "--apply", "--workers", "1", "--timeout", "5", env=env)
        supervisor = read_pidfile(pidfile)
        assert supervisor is not None and alive(supervisor), start.stdout + start.stderr
        # Ready only once every executable of the suite exists; until then the children crash-loop.
        assert start.returncode in (0, 69)
        state = json.loads((machina_root / "run" / "machina-up.json").read_text())
        assert set(state["components"]) == {"toolhost", "embed", "enqueued", "worker-1", "autonomic"}
        again = script("ops_start.sh", "--apply", env=env)
        assert again.returncode == 0 and "already running" in again.stdout
        children = [p for p in (read_pidfile(str(f)) for f in (machina_root / "run").glob("*.pid")) if p]
        kill = script("ops_kill.sh", "--apply", "--timeout", "60", env=env)
        assert kill.returncode == 0, kill.stdout + kill.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(supervisor):
            time.sleep(0.1)
        assert not alive(supervisor)
        assert not [p for p in children if alive(p)]
    finally:
        if supervisor is not None and alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)

"""End to end through the real machina-toolhost: ``machina run`` of every example (goal.ERROR_SCAN.v1 scans
*and* reports), then strict replay and audit, all through a shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import EXAMPLES

from tests.conftest import BIN, bin_env, run_bin

pytest.importorskip("machina.toolhost.service", reason="machina-toolhost is not part of this build")


@pytest.fixture
def env(root: Path) -> dict[str, str]:
    shutil.copy(EXAMPLES / "policies" / "first_pending.py", root / "policies")
    return bin_env(MACHINA_ROOT=str(root), MACHINA_POLICY_CMD="python3 policies/first_pending.py")


@pytest.fixture
def toolhost(root: Path, env: dict[str, str]) -> Iterator[str]:
    socket_path = root / "run" / "toolhost.sock"
    log = open(root / "toolhost.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen([str(BIN / "machina-toolhost"), "--root", str(root)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert proc.poll() is None, (root / "toolhost.log").read_text()
            assert time.monotonic() < deadline, "machina-toolhost did not start"
            time.sleep(0.05)
        yield str(socket_path)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


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

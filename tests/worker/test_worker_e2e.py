"""End to end through the real suite: POST /enqueue to machina-enqueued -> machina-worker -> the real
machina-toolhost (sandboxed tools) -> done/ with the result and a run log in which scan and report both
ran; the job's state over GET /jobs/<name>, and the per-tool figures on GET /metrics."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from workerkit import ERROR_SCAN, Suite, wait_for

from tests.conftest import BIN, CHECKOUT


def _built(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


pytestmark = [
    pytest.mark.skipif(not _built("machina.toolhost.main"), reason="machina-toolhost not built yet (branch toolhost)"),
    pytest.mark.skipif(not _built("machina.enqueued.main"), reason="machina-enqueued not built yet (branch enqueued)"),
]

TOKEN = "e2e-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def real_suite(machina_root: Path, tmp_path: Path) -> Iterator[tuple[Suite, str]]:
    """The real toolhost and HTTP daemon on the root; workers are started by the test."""
    port = free_port()
    kit = Suite(machina_root, tmp_path, MACHINA_API_TOKEN=TOKEN, MACHINA_API_PORT=str(port))
    daemons = []
    for name in ("machina-toolhost", "machina-enqueued"):
        with open(tmp_path / f"{name}.log", "wb") as log:
            daemons.append(subprocess.Popen([str(BIN / name)], env=kit.env, stderr=log, stdout=log, cwd=CHECKOUT))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(kit.toolhost_socket.exists, 30, "the toolhost socket")
        wait_for(lambda: _healthy(base), 30, "machina-enqueued /health")
        yield kit, base
    finally:
        kit.close()
        for proc in daemons:
            proc.terminate()
        for proc in daemons:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_post_to_done_with_result_and_run_log_for_error_scan(real_suite: tuple[Suite, str]) -> None:
    suite, base = real_suite
    worker = suite.start_worker()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = dict(ERROR_SCAN, request_id="e2e-error-scan")
    reply = requests.post(f"{base}/enqueue", json=body, headers=auth, timeout=10)
    assert reply.status_code == 200, reply.text
    name = reply.json()["queued"]

    job = suite.wait_state(name, "done", timeout=60)
    (envelope,) = job.results
    result = envelope["result"]
    assert result["status"] == "done" and result["request_id"] == "e2e-error-scan"
    assert set(result["outputs"]) == {"AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"}
    assert result["outputs"]["AID.ERROR_SCAN.v1"]["matches"] == 3
    report = suite.root / result["outputs"]["AID.REPORT_SUMMARY.v1"]["output_path"]
    assert "database connection refused" in report.read_text()

    with open(result["log_path"], encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle]
    tools = [(e["aid"], e["ok"]) for e in events if e["event"] == "tool"]
    assert tools == [("AID.ERROR_SCAN.v1", True), ("AID.REPORT_SUMMARY.v1", True)]  # scan, then report
    assert {e["request_id"] for e in events} == {"e2e-error-scan"}
    assert events[-1]["event"] == "done" and events[-1]["status"] == "done"
    replay = suite.run_machina("replay", result["log_path"])
    assert replay.returncode == 0, replay.stdout + replay.stderr

    shown = requests.get(f"{base}/jobs/{name}", headers=auth, timeout=10).json()
    assert shown["state"] == "done" and shown["results"][0]["result"]["run_id"] == result["run_id"]

    def metrics() -> str:
        return str(requests.get(f"{base}/metrics", headers=auth, timeout=10).text)

    wait_for(lambda: 'machina_tool_ok_total{aid="AID.REPORT_SUMMARY.v1"} 1.0' in metrics(), 10, "tool figures")
    text = metrics()
    assert 'machina_tool_ok_total{aid="AID.ERROR_SCAN.v1"} 1.0' in text
    assert "machina_jobs_processed_total 1.0" in text
    assert worker.stop() == 0


def test_many_jobs_through_the_real_toolhost_each_done_once(real_suite: tuple[Suite, str]) -> None:
    suite, base = real_suite
    workers = [suite.start_worker("1"), suite.start_worker("2")]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    names = []
    for i in range(20):
        reply = requests.post(
            f"{base}/enqueue", json=dict(ERROR_SCAN, request_id=f"many-{i}"), headers=auth, timeout=10
        )
        assert reply.status_code == 200, reply.text
        names.append(reply.json()["queued"])
    started = time.monotonic()
    for name in names:
        suite.wait_state(name, "done", timeout=max(5.0, 90 - (time.monotonic() - started)))
    assert all(len(suite.results(name)) == 1 for name in names)
    for worker in workers:
        assert worker.stop() == 0

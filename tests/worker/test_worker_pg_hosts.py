"""Beyond one machine: machina-enqueued on one root and two machina-worker processes on two other roots (as
three hosts would be), all on one PostgreSQL database (MACHINA_QUEUE_URL).  Jobs posted over HTTP run on
both workers, each exactly once; the run logs stay on the root of the worker that ran them; GET /jobs,
/stats and /metrics on the ingress and `machina queue show` on a worker's root all answer from the
database."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from workerkit import ERROR_SCAN, Suite, wait_for

from machina.root import init_root
from machina.testing.pgserver import PgServer, find_binaries, missing_reason
from tests.conftest import BIN, CHECKOUT


def _built(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


pytestmark = [
    pytest.mark.skipif(find_binaries() is None, reason=missing_reason()),
    pytest.mark.skipif(not _built("machina.enqueued.main"), reason="machina-enqueued not built yet"),
]

TOKEN = "hosts-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[PgServer]:
    with PgServer() as started:
        yield started


@pytest.fixture
def database(server: PgServer) -> str:
    return server.create_database("machina")


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture
def ingress(database: str, machina_root: Path, tmp_path: Path) -> Iterator[str]:
    """machina-enqueued on machina_root, on the migrated database; yields its base URL."""
    port = free_port()
    env = {"MACHINA_QUEUE_URL": database, "MACHINA_API_TOKEN": TOKEN, "MACHINA_API_PORT": str(port)}
    env["MACHINA_WAL_FSYNC"] = "1"  # synchronous_commit=on: what is acknowledged survives a database crash
    host = Suite(machina_root, tmp_path, **env)
    migrated = host.run_machina("queue", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with open(tmp_path / "enqueued.log", "wb") as log:
        daemon = subprocess.Popen([str(BIN / "machina-enqueued")], env=host.env, stdout=log, stderr=log, cwd=CHECKOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(base), 30, "machina-enqueued /health")
        yield base
    finally:
        daemon.terminate()
        daemon.wait(20)


@pytest.fixture
def hosts(ingress: str, database: str, tmp_path: Path) -> Iterator[tuple[str, list[Suite]]]:
    """The ingress, and two worker roots, each with its own toolhost (workers are started by the test)."""
    suites: list[Suite] = []
    try:
        for host in ("b", "c"):
            (tmp_path / host).mkdir()
            root = tmp_path / host / "root"
            init_root(str(root))
            suite = Suite(root, tmp_path / host, MACHINA_QUEUE_URL=database)
            suites.append(suite)
            suite.start_toolhost()
        yield ingress, suites
    finally:
        for suite in suites:
            suite.close()


def test_two_worker_hosts_share_one_database(hosts: tuple[str, list[Suite]]) -> None:
    base, (host_b, host_c) = hosts
    workers = [host_b.start_worker("1"), host_c.start_worker("2")]
    for worker in workers:
        wait_for(lambda w=worker: "ready" in w.text(), 60, "the worker to be ready")
    names = []
    for i in range(16):
        reply = requests.post(
            f"{base}/enqueue", json=dict(ERROR_SCAN, request_id=f"hosts-{i}"), headers=AUTH, timeout=10
        )
        assert reply.status_code == 200, reply.text
        names.append(reply.json()["queued"])

    def job(name: str) -> dict[str, object]:
        return dict(requests.get(f"{base}/jobs/{name}", headers=AUTH, timeout=10).json())

    wait_for(lambda: all(job(n)["state"] == "done" for n in names), 120, "every job to be done")
    ran_on: dict[str, int] = {}
    for name in names:
        (envelope,) = job(name)["results"]  # type: ignore[misc]
        result = envelope["result"]
        assert result["status"] == "done"
        log_path = Path(result["log_path"])
        root = host_b.root if log_path.is_relative_to(host_b.root) else host_c.root
        assert log_path.is_relative_to(root) and log_path.exists(), "the run log stays on the worker's root"
        ran_on[envelope["worker_id"]] = ran_on.get(envelope["worker_id"], 0) + 1
    assert set(ran_on) == {"1", "2"} and sum(ran_on.values()) == 16, ran_on

    stats = requests.get(f"{base}/stats", headers=AUTH, timeout=10).json()
    assert stats["sizes"]["done"] == 16 and stats["counters"]["done"] == 16
    metrics = requests.get(f"{base}/metrics", headers=AUTH, timeout=10).text
    assert "machina_queue_done_size 16.0" in metrics
    shown = host_c.run_machina("queue", "show", names[0], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "done"
    assert not (host_b.root / "queue" / "done").exists() or not list((host_b.root / "queue" / "done").iterdir())
    for worker in workers:
        assert worker.stop() == 0


def test_ingress_answers_503_while_the_database_is_down_and_loses_nothing(ingress: str, server: PgServer) -> None:
    """The database killed (kill -9) under machina-enqueued (MACHINA_WAL_FSYNC=1): a POST is refused with 503
    and Retry-After; once it is back, requests are queued again and everything acknowledged before the
    crash is still there."""
    base = ingress
    acked = []
    for i in range(5):
        reply = requests.post(
            f"{base}/enqueue", json=dict(ERROR_SCAN, request_id=f"down-{i}"), headers=AUTH, timeout=30
        )
        assert reply.status_code == 200, reply.text
        acked.append(reply.json()["queued"])
    server.kill()
    refused = requests.post(f"{base}/enqueue", json=dict(ERROR_SCAN, request_id="while-down"), headers=AUTH, timeout=60)
    assert refused.status_code == 503 and refused.headers.get("retry-after"), refused.text
    assert "nothing was queued" in refused.text
    server.start()

    def post_again() -> requests.Response | None:
        reply = requests.post(
            f"{base}/enqueue", json=dict(ERROR_SCAN, request_id="while-down"), headers=AUTH, timeout=60
        )
        return reply if reply.status_code == 200 else None

    again = wait_for(post_again, 60, "the ingress to queue again after the database came back")
    names = {again.json()["queued"], *acked}
    for name in names:
        shown = requests.get(f"{base}/jobs/{name}", headers=AUTH, timeout=10)
        assert shown.status_code == 200 and shown.json()["state"] == "inbox", shown.text

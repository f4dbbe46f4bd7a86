"""`machina up` / `machina serve` / `machina status` as an operator runs them, with the real executables.

The end-to-end job test needs machina-enqueued, machina-worker and machina-toolhost; until they are built
it is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from machina.cli.up_cmd import cap_workers
from machina.up.components import suite
from tests.conftest import CHECKOUT, bin_env, run_bin
from tests.ops.supervised import SAMPLE_JOB, SAMPLE_LOG, alive, built, curl_enqueue, free_port, wait_for_path

TOKEN = "up-test-token-0123456789"


class Up:
    """`bin/machina up ...` in the background, as a terminal would run it (its own process group)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.err = root.parent / "up.err"
        self.out = root.parent / "up.out"
        self.port = free_port()  # never the default 8080: other tests run beside these
        env = bin_env(MACHINA_ROOT=str(root), MACHINA_API_TOKEN=TOKEN, MACHINA_API_PORT=str(self.port))
        with open(self.err, "w") as err, open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [str(CHECKOUT / "bin" / "machina"), "up", *args],
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
                cwd=root,
            )
        self.seen: set[int] = set()

    def state(self) -> dict:
        return json.loads((self.root / "run" / "machina-up.json").read_text())

    def wait_state(self, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.state()
                self.seen |= {c["pid"] for c in state["components"].values() if c["pid"]}
                return state
            except (FileNotFoundError, ValueError):
                time.sleep(0.1)
        raise AssertionError(f"no machina-up.json after {timeout}s:\n{self.err.read_text()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=150)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.seen:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up_factory(machina_root):
    made: list[Up] = []

    def make(*args: str) -> Up:
        u = Up(machina_root, *args)
        made.append(u)
        return u

    yield make
    for u in made:
        u.close()


def test_workers_are_capped_at_64() -> None:
    assert cap_workers(None) is None
    assert cap_workers(64) == 64
    assert cap_workers(1000) == 64
    specs = suite(64, "127.0.0.1", 8080, lambda n: f"/run/{n}.sock", locate=lambda e: [e])
    assert len([s for s in specs if s.executable == "machina-worker"]) == 64
    with pytest.raises(ValueError):
        suite(65, "127.0.0.1", 8080, lambda n: n, locate=lambda e: [e])


def test_bad_worker_counts_are_usage_or_config_errors(machina_root) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root))
    assert run_bin("machina", "up", "--workers", "0", env=env).returncode == 64
    bad = run_bin("machina", "up", env=bin_env(MACHINA_ROOT=str(machina_root), MACHINA_WORKERS="65"))
    assert bad.returncode == 78 and "MACHINA_WORKERS" in bad.stderr


def test_up_without_a_root_is_exit_78(tmp_path) -> None:
    result = run_bin("machina", "up", env=bin_env(MACHINA_ROOT=str(tmp_path / "absent")))
    assert result.returncode == 78 and "machina init" in result.stderr


def test_up_runs_the_suites_executables_refuses_a_second_and_stops_clean_on_ctrl_c(up_factory, machina_root) -> None:
    up = up_factory("--workers", "2")
    state = up.wait_state()
    assert set(state["components"]) == {"toolhost", "embed", "enqueued", "worker-1", "worker-2", "autonomic"}
    assert state["endpoints"]["http"] == f"http://127.0.0.1:{up.port}"
    assert {c["executable"] for c in state["components"].values()} == {
        "machina-toolhost",
        "machina-embed",
        "machina-enqueued",
        "machina-worker",
        "machina-autonomic",
    }
    second = run_bin("machina", "serve", "--port", str(free_port()), env=bin_env(MACHINA_ROOT=str(machina_root)))
    assert second.returncode == 75 and "already running" in second.stderr
    status = run_bin("machina", "status", "--json", env=bin_env(MACHINA_ROOT=str(machina_root)))
    report = json.loads(status.stdout)
    assert report["manager"] == "machina up"
    assert status.returncode == (0 if report["ok"] else 69)
    time.sleep(1)
    up.wait_state()
    assert up.stop(signal.SIGINT) == 0, up.err.read_text()
    assert not [p for p in up.seen if alive(p)]
    assert os.listdir(machina_root / "run") == []  # pid files, state, lock, sockets, /etc views: all gone


def test_after_a_sigkill_the_next_up_sweeps_what_the_killed_one_left(up_factory, machina_root) -> None:
    run_dir = machina_root / "run"
    first = up_factory("--workers", "1")
    first.wait_state()
    wait_for_path(run_dir / "toolhost.sock")
    first.stop(signal.SIGKILL)  # its children get SIGTERM from PR_SET_PDEATHSIG and stop cleanly
    # Every child it had started, not only those of its first state file: a worker still stopping when the
    # second one sweeps keeps its pid file (its process runs), and the second may stop before its own worker.
    first.wait_state()
    first.seen |= {int(p.read_text()) for p in run_dir.glob("*.pid") if p.name != "machina-up.pid"}
    deadline = time.monotonic() + 60
    while [p for p in first.seen if alive(p)]:
        assert time.monotonic() < deadline, f"children of the killed machina up still alive: {first.seen}"
        time.sleep(0.1)
    left = set(os.listdir(run_dir))
    assert {"machina-up.pid", "machina-up.json", "machina-up.lock", "machina-up.notify"} <= left
    (run_dir / "worker-7.pid").write_text(f"{first.proc.pid}\n")  # a worker of a bigger suite, long gone
    second = up_factory("--workers", "1")
    deadline = time.monotonic() + 60
    while second.wait_state()["pid"] != second.proc.pid:  # the killed one's state file until swept
        assert time.monotonic() < deadline and second.proc.poll() is None, second.err.read_text()
        time.sleep(0.1)
    assert not (run_dir / "worker-7.pid").exists()
    assert second.stop(signal.SIGTERM) == 0, second.err.read_text()
    assert os.listdir(run_dir) == []


def test_a_read_only_run_dir_stops_up_with_one_line_and_exit_73(machina_root) -> None:
    from tests.disk_support import tmpfs_unavailable

    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)
    run_dir = machina_root / "run"
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f'mount --bind {run_dir} {run_dir}; mount -o remount,bind,ro {run_dir}; exec "$0" up',
         str(CHECKOUT / "bin" / "machina")],
        env=bin_env(MACHINA_ROOT=str(machina_root)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"machina: cannot create {run_dir}/machina-up.lock: Read-only file system"


@pytest.mark.skipif(
    not all(built(m) for m in ("machina.enqueued.main", "machina.worker.main", "machina.toolhost.main")),
    reason="machina-worker not built yet (needs machina-enqueued, machina-worker and machina-toolhost)",
)
def test_a_job_flows_from_curl_to_done(up_factory, machina_root) -> None:
    up = up_factory("--workers", "1")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "machina is up" not in up.out.read_text():
        assert up.proc.poll() is None, up.err.read_text()
        time.sleep(0.2)
    up.wait_state()
    banner = up.out.read_text()
    assert "send jobs:" in banner and "/enqueue" in banner, up.err.read_text()
    (machina_root / "data").mkdir(exist_ok=True)  # machina-autonomic's probes may have made it
    (machina_root / "data" / "app.log").write_text(SAMPLE_LOG)
    http = json.loads((machina_root / "run" / "machina-up.json").read_text())["endpoints"]["http"]
    queued = curl_enqueue(http, TOKEN, SAMPLE_JOB)
    done = machina_root / "queue" / "done" / queued
    assert wait_for_path(done), up.err.read_text()
    assert up.stop(signal.SIGTERM) == 0
    assert not [p for p in up.seen if alive(p)]


@pytest.mark.skipif(
    not all(built(m) for m in ("machina.enqueued.main", "machina.worker.main", "machina.toolhost.main")),
    reason="machina-worker not built yet (needs machina-enqueued, machina-worker and machina-toolhost)",
)
def test_quickstart_pushes_the_sample_job_to_done(tmp_path) -> None:
    """The README's one command (scripts/quickstart.sh), on a private root and port."""
    env = bin_env(MACHINA_ROOT=str(tmp_path / "demo"), MACHINA_API_PORT=str(free_port()))
    result = subprocess.run(
        [str(CHECKOUT / "scripts" / "quickstart.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: " in result.stdout and "result (" in result.stdout
    assert not (tmp_path / "demo" / "run" / "machina-up.pid").exists()  # stopped again

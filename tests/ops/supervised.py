"""Test helper: run standin_suite.py (the real Supervisor over stand-in children) and watch it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machina.proctree import pid_alive as alive
from tests.conftest import bin_env

HERE = Path(__file__).resolve().parent
STANDIN = str(HERE / "standin.py")
SCRIPTS = HERE.parent.parent / "scripts"


def script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a script the way cron does: through /bin/sh, by path, with the operator's environment."""
    return subprocess.run(
        ["/bin/sh", "-c", '"$0" "$@"', str(SCRIPTS / name), *args],
        env=env if env is not None else bin_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def standin(name: str, *args: str, **spec: Any) -> dict[str, Any]:
    """A ChildSpec dict for a stand-in child."""
    return {"name": name, "argv": [sys.executable, STANDIN, "--name", name, *args], "executable": "standin.py", **spec}


class SupervisedSuite:
    def __init__(self, tmp_path: Path, children: list[dict[str, Any]], backoff: dict[str, float] | None = None):
        self.runtime_dir = tmp_path / "run"
        self.runtime_dir.mkdir(exist_ok=True)
        self.spec_file = tmp_path / "spec.json"
        self.spec_file.write_text(json.dumps({"children": children, "backoff": backoff or {"first": 0.2}}))
        self.stderr_path = tmp_path / "supervisor.err"
        self.proc: subprocess.Popen[str] | None = None
        self.seen_pids: set[int] = set()

    def start(self) -> SupervisedSuite:
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "standin_suite.py"), str(self.spec_file), str(self.runtime_dir)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if line.strip() == "ALL READY":
                    self.note_pids()
                    return
                if line == "":
                    break
        raise AssertionError(f"suite not ready after {timeout}s:\n{self.stderr()}")

    def state(self) -> dict[str, Any]:
        return json.loads((self.runtime_dir / "machina-up.json").read_text())

    def pid_of(self, name: str) -> int:
        return int((self.runtime_dir / f"{name}.pid").read_text())

    def note_pids(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            for info in self.state()["components"].values():
                if info["pid"]:
                    self.seen_pids.add(info["pid"])

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition") -> Any:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.note_pids()
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                value = predicate()
                if value:
                    return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Never leave anything behind, even when a test failed half way (by pid only)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        for pid in self.seen_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    """A loopback port nobody listens on now (never a fixed one: other tests run beside ours)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def built(module: str) -> bool:
    """Whether an executable's module (``machina.worker.main``) exists yet in this checkout."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# --- the end-to-end job (curl -> machina-enqueued -> worker -> done/), shared by `machina up` and systemd --

SAMPLE_LOG = "2026-01-01 ERROR disk full\n2026-01-01 INFO fine\n"
SAMPLE_JOB = {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"}}


def curl_enqueue(base_url: str, token: str, job: dict[str, Any]) -> str:
    """POST the job with curl, as a client would; the name it was queued under."""
    headers = ["-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json"]
    reply = subprocess.run(
        ["curl", "-sS", "--max-time", "30", *headers, "--data-binary", json.dumps(job), f"{base_url}/enqueue"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reply.returncode == 0, reply.stderr
    body = json.loads(reply.stdout)
    assert body["ok"] is True, body
    return str(body["queued"])


def wait_for_path(path: Path, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.5)
    return path.exists()

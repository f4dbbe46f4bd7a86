"""A small suite for the worker's tests: a root with the example data, the real machina-toolhost on it and
workers started as real processes — ``bin/machina-worker`` through /bin/sh, or fault_worker.py whose
children obey a request's ``"fault"``.  Every process started here is ended by its pid in
:meth:`Suite.close`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machina.proctree import pid_alive
from machina.queue import FileQueue, JobStatus, QueueConfig
from tests.conftest import BIN, CHECKOUT, bin_env

HERE = Path(__file__).resolve().parent
FAULT_WORKER = HERE / "fault_worker.py"
NOOP = {"goal_id": "goal.NOOP.v1"}
ERROR_SCAN = {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log"}}


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class NotifySocket:
    """An AF_UNIX datagram socket listening as systemd's notify socket does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        """The first message (seen before or arriving now) for which ``predicate`` holds."""
        for message in self.messages:
            if predicate(message):
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(65536).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no matching notify message within {timeout:g} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


class Suite:
    def __init__(self, root: Path, tmp: Path, **env: str) -> None:
        self.root = root
        self.tmp = tmp
        shutil.copytree(CHECKOUT / "examples" / "data", root / "data", dirs_exist_ok=True)
        defaults = {
            "MACHINA_ROOT": str(root),
            "MACHINA_RETRY_MIN_MS": "0",
            "MACHINA_RETRY_MAX_MS": "0",
            "MACHINA_MAX_ATTEMPTS": "2",
            "MACHINA_WORKER_CONCURRENCY": "2",  # fewer processes to start than the default 4
        }
        self.env = bin_env(**{**defaults, **env})
        self.toolhost: subprocess.Popen[bytes] | None = None
        self.workers: list[Worker] = []
        self._queue: FileQueue | None = None
        self._logs = 0

    # --- processes ---------------------------------------------------------------------------------------

    @property
    def toolhost_socket(self) -> Path:
        return self.root / "run" / "toolhost.sock"

    def start_toolhost(self) -> None:
        """bin/machina-toolhost on the root's default socket, once it accepts connections."""
        with open(self.tmp / "toolhost.log", "ab") as log:
            self.toolhost = subprocess.Popen([str(BIN / "machina-toolhost")], env=self.env, stdout=log, stderr=log)
        wait_for(self._toolhost_answers, 30, "machina-toolhost to accept connections")

    def _toolhost_answers(self) -> bool:
        assert self.toolhost is not None and self.toolhost.poll() is None, (self.tmp / "toolhost.log").read_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.toolhost_socket))
            except OSError:
                return False
        return True

    def start_worker(
        self,
        worker_id: str = "1",
        *,
        faulty: bool = False,
        notify: NotifySocket | None = None,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> Worker:
        """``machina-worker --id ID`` (bin/, through /bin/sh), or fault_worker.py with the same arguments."""
        self._logs += 1
        log = self.tmp / f"worker-{worker_id}-{self._logs}.log"
        full_env = dict(self.env, **env)
        if notify is not None:
            full_env.update(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=env.get("WATCHDOG_USEC", "1000000"))
        if faulty:
            argv = [sys.executable, str(FAULT_WORKER), "--id", worker_id, *args]
        else:
            argv = ["/bin/sh", "-c", f'exec {BIN}/machina-worker --id "$@"', "sh", worker_id, *args]
        with open(log, "wb") as handle:
            proc = subprocess.Popen(argv, env=full_env, stderr=handle, stdout=handle, cwd=CHECKOUT)
        worker = Worker(proc, log)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        if self.toolhost is not None and self.toolhost.poll() is None:
            self.toolhost.terminate()
            try:
                self.toolhost.wait(20)
            except subprocess.TimeoutExpired:
                self.toolhost.kill()
                self.toolhost.wait()
        if self._queue is not None:
            self._queue.close()
        self._kill_fault_leftovers()

    def _kill_fault_leftovers(self) -> None:
        """Sleepers a "hang" fault started (the worker kills them; this only guards against a failing test)."""
        for path in (self.root / "faults").glob("*.pid") if (self.root / "faults").exists() else []:
            for pid in map(int, path.read_text().split()):
                if pid_alive(pid) and (_cmdline(pid) == "sleep 300 " or "fault_child.py" in _cmdline(pid)):
                    os.kill(pid, signal.SIGKILL)

    # --- the queue ---------------------------------------------------------------------------------------

    @property
    def queue(self) -> FileQueue:
        if self._queue is None:
            self._queue = FileQueue(str(self.root), QueueConfig(retry_min_ms=0, retry_max_ms=0, max_attempts=2))
        return self._queue

    def enqueue(self, request: dict[str, Any], **fault: Any) -> str:
        body = dict(request, **fault)
        if fault:
            body["fault_root"] = str(self.root)
        return self.queue.enqueue(body).name

    def status(self, name: str) -> JobStatus:
        status = self.queue.job_status(name)
        assert status is not None, f"{name}: unknown job"
        return status

    def wait_state(self, name: str, state: str, timeout: float = 30.0) -> JobStatus:
        wait_for(lambda: self.status(name).state == state, timeout, f"{name} to reach {state}/")
        return self.status(name)

    def results(self, name: str) -> list[dict[str, Any]]:
        """The out/ envelopes of a job, attempt order."""
        return self.status(name).results

    def fault_pids(self, name: str, attempt: int, timeout: float = 20.0) -> list[int]:
        path = self.root / "faults" / f"{name}.a{attempt}.pid"
        wait_for(path.exists, timeout, f"the fault pid file of {name} attempt {attempt}")
        return [int(p) for p in path.read_text().split()]

    def files(self, state: str) -> list[str]:
        return sorted(os.listdir(self.root / "queue" / state))

    def run_machina(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``machina ARGV...`` from bin/, in this suite's environment."""
        return subprocess.run(
            [str(BIN / "machina"), *argv], env=dict(self.env, **env), capture_output=True, text=True, timeout=60
        )

    def figures(self, worker_id: str = "1") -> dict[str, Any]:
        path = self.root / "state" / "metrics" / f"worker-{worker_id}.json"
        return json.loads(path.read_text()) if path.exists() else {}


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""

"""Start a real ``machina-toolhost`` for tests and benchmarks, wait until it answers, stop it afterwards.

    from machina.testing.toolhost import running_toolhost

    with running_toolhost(root, env={"MACHINA_PERMISSION_MODE": "open"}) as host:
        reply = host.client.call("AID.NOOP.v1", {})

The toolhost is a separate process started like an operator would (``python -m machina.entrypoints
machina-toolhost --root ROOT``), with a clean environment: only PATH, TMPDIR, MACHINA_ENV_FILE=/dev/null,
MACHINA_ROOT and what ``env`` adds.  Its log goes to ``<root>/toolhost-test.log`` (read it with
``host.log()``).  Pytest users: the ``toolhost`` fixture of tests/toolhost/conftest.py wraps this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from machina.ipc.jsonlines import ServiceUnavailable
from machina.toolhost.client import ToolhostClient

START_TIMEOUT_S = 60.0


class ToolhostDidNotStart(RuntimeError):
    pass


@dataclass
class RunningToolhost:
    proc: subprocess.Popen[bytes]
    root: str
    socket_path: str
    log_path: str
    client: ToolhostClient

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def new_client(self, timeout: float = 60.0) -> ToolhostClient:
        return ToolhostClient(self.socket_path, timeout=timeout)


def toolhost_command(root: str, args: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "machina.entrypoints", "machina-toolhost", "--root", root, *args]


@contextlib.contextmanager
def running_toolhost(
    root: str,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    socket_path: str | None = None,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[RunningToolhost]:
    """A started toolhost on ``root``; SIGTERM (then SIGKILL) on the way out."""
    root = os.path.abspath(root)
    socket_path = socket_path or os.path.join(root, "run", "toolhost.sock")
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": root}
    if "TMPDIR" in os.environ:
        environ["TMPDIR"] = os.environ["TMPDIR"]  # a test run's private one: what the toolhost leaves shows there
    environ.update(env or {})
    if "--socket" not in args:
        args = [*args, "--socket", socket_path]
    log_path = os.path.join(root, "toolhost-test.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            toolhost_command(root, args), env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=root
        )
    host = RunningToolhost(proc, root, socket_path, log_path, ToolhostClient(socket_path, timeout=60.0))
    try:
        _wait_until_ready(host, timeout)
        yield host
    finally:
        host.client.close()
        stop(proc)


def _wait_until_ready(host: RunningToolhost, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.proc.poll() is not None:
            raise ToolhostDidNotStart(f"machina-toolhost exited with {host.proc.returncode}:\n{host.log()}")
        with contextlib.suppress(ServiceUnavailable, OSError):
            host.client.ping()
            return
        time.sleep(0.05)
    raise ToolhostDidNotStart(f"machina-toolhost did not answer within {timeout:g}s:\n{host.log()}")


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Python executors seen from the toolhost: start one in a sandbox, talk to it, keep a few ready.

An executor (:mod:`machina.sandbox.executor`) runs built-in tools and plugins.  Two ways to use one:

* **fresh**: started for one call and gone after it (plugins, GPU_SMOKE, and every built-in under
  ``MACHINA_TOOLHOST_ISOLATE=1``);
* **pooled**: :class:`ExecutorPool` keeps ``MACHINA_TOOLHOST_POOL_SIZE`` executors per profile
  (``strict``, ``net``), idle or busy, started by its own long-lived thread (bwrap's --die-with-parent
  follows the thread that started it).  A call waits for an idle one rather than paying for a new
  sandbox; a healthy executor goes back to the pool and serves call after call.  A pooled executor sits
  in exactly the sandbox a fresh one gets (namespaces, seccomp profile, rlimits, cleared environment, tool
  uid) plus the no-spawn seccomp layer; it is retired after ``MACHINA_TOOLHOST_POOL_RECYCLE`` calls or at
  once after any failed call, timeout or protocol error.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from machina.backoff import Backoff
from machina.proc import Rlimits
from machina.proctree import kill_group
from machina.sandbox import channel, seccomp
from machina.sandbox.launch import prepare, python_paths
from machina.sandbox.policy import SandboxPolicy, SandboxUnavailable
from machina.toolhost.broker import CallScope

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
EXECUTOR_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class ExecutorFailed(Exception):
    """The executor died, broke the protocol, or could not start."""


class ExecutorTimedOut(ExecutorFailed):
    pass


@dataclass(frozen=True)
class ExecutorSpec:
    """What kind of executor to start."""

    network: bool = False
    no_spawn: bool = True
    one_shot: bool = False
    cpu_per_call: int = 0
    devices: tuple[str, ...] = ()
    rlimits: Rlimits = field(default_factory=Rlimits)


class Executor:
    """One running executor process and the toolhost's end of its channel."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, stderr: Any, cleanup: Callable[[], None]):
        self.proc = proc
        self.sock = sock
        self.stderr = stderr
        self._cleanup = cleanup
        self.calls = 0
        self.uid = -1

    def call(
        self, message: dict[str, Any], scope: CallScope, deadline: float, fds: Sequence[int] = ()
    ) -> dict[str, Any]:
        """Send a call (with ``fds``, which are closed here) and serve its broker requests until ``done``;
        ExecutorFailed on anything else."""
        self.calls += 1
        try:
            self._send(message, fds)
        finally:
            for fd in fds:
                os.close(fd)
        while True:
            reply = self._recv(deadline)
            kind = reply.get("t")
            if kind == "done":
                return reply
            if kind != "host":
                raise ExecutorFailed(f"executor sent {kind!r} in the middle of a call")
            answer, fds = scope.answer(str(reply.get("op")), reply.get("args") or {})
            try:
                self._send(answer, fds)
            finally:
                for fd in fds:
                    os.close(fd)

    def _send(self, message: dict[str, Any], fds: Iterable[int] = ()) -> None:
        try:
            channel.send(self.sock, message, list(fds))
        except (channel.ChannelError, OSError) as exc:
            raise ExecutorFailed(self._death_note(f"cannot reach the executor: {exc}")) from None

    def _recv(self, deadline: float, max_frame: int = channel.DEFAULT_MAX_FRAME) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ExecutorTimedOut("the tool ran out of time")
        self.sock.settimeout(remaining)
        try:
            message, fds = channel.recv(self.sock, max_frame)
        except TimeoutError:
            raise ExecutorTimedOut("the tool ran out of time") from None
        except (channel.ChannelError, OSError) as exc:
            raise ExecutorFailed(self._death_note(str(exc))) from None
        for fd in fds:  # an executor has no business sending descriptors
            os.close(fd)
        return message

    def wait_ready(self, timeout: float, expected_uid: int | None) -> None:
        message = self._recv(time.monotonic() + timeout)
        if message.get("t") != "ready":
            raise ExecutorFailed(f"executor said {message.get('t')!r} instead of ready")
        self.uid = int(message.get("uid", -1))
        if expected_uid is not None and self.uid != expected_uid:
            raise ExecutorFailed(f"executor runs as uid {self.uid}, not the tool uid {expected_uid}")

    def _death_note(self, what: str) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=0.5)
        status = self.proc.poll()
        tail = ""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0)
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
            tail = lines[-1] if lines else ""
        detail = f"exit status {status}" if status is not None else "still running"
        return f"{what} ({detail}{': ' + tail if tail else ''})"

    def kill(self) -> None:
        """End the executor and everything in its sandbox (bwrap's group, and with it the pid namespace)."""
        kill_group(self.proc)  # idempotent: nothing once the executor was collected (its pid may be reused)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.proc.wait()
        with contextlib.suppress(OSError):
            self.stderr.close()
        self._cleanup()


def start_executor(policy: SandboxPolicy, spec: ExecutorSpec) -> Executor:
    """Start an executor in a new sandbox and wait for its ``ready``; ExecutorFailed when it cannot."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs_fd = theirs.detach()  # a plain descriptor from here on: closed once, by _close_all
    passed = [theirs_fd]
    command = [sys.executable, "-I", "-B", "-m", "machina.sandbox.executor", "--fd", str(theirs_fd)]
    if policy.drops_privileges:
        command += ["--drop", f"{policy.tool_uid}:{policy.tool_gid}"]
    if spec.no_spawn:
        guard = seccomp.memfd_of(seccomp.no_spawn_program())
        passed.append(guard)
        command += ["--no-spawn-fd", str(guard)]
    for flag, wanted in (("--one-shot", spec.one_shot), ("--net", spec.network)):
        if wanted:
            command.append(flag)
    if spec.cpu_per_call:
        command += ["--cpu-per-call", str(spec.cpu_per_call)]
    try:
        launch = prepare(
            policy,
            command,
            network=spec.network,
            ro_paths=python_paths(),
            devices=spec.devices,
            env=EXECUTOR_ENV,
            drop_in_process=True,
            keep_fds=tuple(passed),
            rlimits=spec.rlimits,
        )
    except BaseException:
        ours.close()
        _close_all(passed)
        raise
    # In memory, not in $TMPDIR: nothing on disk to leave behind, and a full or read-only /tmp cannot stop us.
    stderr = os.fdopen(os.memfd_create("machina-executor-stderr", os.MFD_CLOEXEC), "w+b")
    try:
        proc = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        ours.close()
        stderr.close()
        launch.finished()
        raise ExecutorFailed(f"cannot start the sandbox: {exc}") from None
    finally:
        _close_all(passed)
        launch.spawned()
    executor = Executor(proc, ours, stderr, launch.finished)
    try:
        executor.wait_ready(READY_TIMEOUT_S, policy.tool_uid)
    except ExecutorFailed:
        executor.kill()
        raise
    return executor


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class ExecutorPool:
    """Up to ``size`` executors of one profile, idle or busy; the spawner replaces the retired ones."""

    def __init__(self, name: str, factory: Callable[[], Executor], size: int, recycle_after: int) -> None:
        self.name = name
        self.factory = factory
        self.size = size
        self.recycle_after = recycle_after
        self._idle: collections.deque[Executor] = collections.deque()
        self._starting = 0
        self._busy = 0
        # Two conditions on one lock: a release wakes one caller waiting for an executor, never the spawner
        # too (which woke on every call only to find the pool full, a thread switch per tool call); a
        # retirement wakes the spawner.
        lock = threading.Lock()
        self._available = threading.Condition(lock)  # an idle executor, a start failure, or closing
        self._vacancy = threading.Condition(lock)  # room for the spawner to start one, or closing
        self._closing = False
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._spawner, name=f"pool-{name}", daemon=True)
        self.started_total = 0
        self.retired_total = 0

    def start(self) -> None:
        self._thread.start()

    def acquire(self, timeout: float = READY_TIMEOUT_S) -> Executor:
        """An idle executor, waiting for the spawner if none is; SandboxUnavailable if none can start."""
        deadline = time.monotonic() + timeout
        with self._available:
            while not self._idle:
                if self._closing:
                    raise SandboxUnavailable("the toolhost is shutting down")
                if self._last_error and self._starting == 0:
                    raise SandboxUnavailable(f"cannot start a {self.name} executor: {self._last_error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SandboxUnavailable(f"no {self.name} executor became ready within {timeout:g}s")
                self._available.wait(remaining)  # woken by a release or by the spawner
            executor = self._idle.popleft()
            self._busy += 1
            return executor

    def release(self, executor: Executor, healthy: bool) -> None:
        """Give an executor back after a call; a failed or worn-out one is retired instead."""
        with self._available:
            self._busy -= 1
            keep = healthy and not self._closing and executor.calls < self.recycle_after
            keep = keep and executor.proc.poll() is None
            if keep:
                self._idle.append(executor)
                self._available.notify()  # one waiting caller takes it
            else:
                self.retired_total += 1
                self._vacancy.notify()  # the spawner replaces it
        if not keep:
            executor.kill()

    def _spawner(self) -> None:
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            with self._vacancy:
                while not self._closing and len(self._idle) + self._starting + self._busy >= self.size:
                    self._vacancy.wait()
                if self._closing:
                    return
                self._starting += 1
            try:
                executor = self.factory()
            except (ExecutorFailed, SandboxUnavailable, OSError) as exc:
                with self._available:
                    self._starting -= 1
                    self._last_error = str(exc)
                    self._available.notify_all()  # every waiting caller gets the error
                log.error("cannot start a %s executor: %s", self.name, exc)
                delay = backoff.delay()
                with self._vacancy:
                    self._vacancy.wait_for(lambda: self._closing, delay)
                continue
            backoff.reset()
            with self._available:
                self._starting -= 1
                self._last_error = None
                self.started_total += 1
                if self._closing:
                    executor.kill()
                    return
                self._idle.append(executor)
                self._available.notify()

    def stats(self) -> dict[str, int]:
        with self._available:
            return {
                "idle": len(self._idle),
                "busy": self._busy,
                "started": self.started_total,
                "retired": self.retired_total,
            }

    def close(self) -> None:
        with self._available:
            self._closing = True
            idle = list(self._idle)
            self._idle.clear()
            self._available.notify_all()
            self._vacancy.notify_all()
        for executor in idle:
            executor.kill()
        # An executor still starting is killed by the spawner when it is ready, or with this process
        # (bubblewrap's --die-with-parent): no need to wait for it here.
        if self._thread.ident is not None:
            self._thread.join(2.0)

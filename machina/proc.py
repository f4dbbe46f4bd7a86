"""Run a child process with bounds: argv only (never a shell), a given environment, rlimits, a wall-clock
timeout that kills the whole process group, and caps on what is kept of stdout and stderr.

The one bounded-subprocess helper for everything Machina starts that is not a sandboxed tool (the policy
driver, the embedding command) and the base the sandbox builds on.  Output beyond a cap is read and
discarded (so the child never blocks on a full pipe) and reported as truncated.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from machina.proctree import kill_group

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Rlimits:
    """Resource limits for the child; 0 (or None) means "leave unlimited", as the manual says for PyTorch."""

    cpu_sec: int = 0
    as_mb: int = 0
    fsize_mb: int = 0
    nofile: int = 0
    nproc: int = 0

    def apply(self) -> None:
        """Set the limits on the calling process (run in the child between fork and exec)."""
        for limit, value in (
            (resource.RLIMIT_CPU, self.cpu_sec),
            (resource.RLIMIT_AS, self.as_mb * _MIB),
            (resource.RLIMIT_FSIZE, self.fsize_mb * _MIB),
            (resource.RLIMIT_NOFILE, self.nofile),
            (resource.RLIMIT_NPROC, self.nproc),
        ):
            if value:
                resource.setrlimit(limit, (value, value))


@dataclass(frozen=True)
class BoundedResult:
    exit_code: int  # negative: killed by that signal (as subprocess reports it)
    stdout: bytes
    stderr: bytes
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: float
    stopped: bool = False  # ended early because the caller's ``stop()`` said so (the group was killed)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stopped


def run_bounded(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout_s: float,
    stdout_max: int,
    stderr_max: int,
    stdin: bytes | None = None,
    cwd: str | None = None,
    rlimits: Rlimits | None = None,
    pass_fds: Sequence[int] = (),
    preexec: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> BoundedResult:
    """Run ``argv`` to completion or until ``timeout_s``; never raises for the child's own failures.

    ``stop``: polled a few times a second; when it returns True the process group is killed and the result
    says ``stopped`` (a person cancelled what the child was doing for them).

    Raises OSError when the program cannot be started (missing, not executable).
    """
    limits = rlimits or Rlimits()

    def child_setup() -> None:
        limits.apply()
        if preexec is not None:
            preexec()

    started = time.monotonic()
    # As a context manager, Popen closes our ends of the child's pipes on the way out, rather than leaving
    # them to the collector (a daemon that runs a sandbox per call must not hold descriptors that long).
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,  # its own process group, so a timeout kills everything it started
        pass_fds=tuple(pass_fds),
        # Only when there is something to do between fork and exec: otherwise Python may vfork, which is
        # several milliseconds cheaper than fork for a large parent (the toolhost starts a sandbox per call).
        preexec_fn=child_setup if (rlimits is not None or preexec is not None) else None,
        close_fds=True,
    ) as proc:
        try:
            out, err, timed_out = _communicate(proc, stdin, started + timeout_s, stdout_max, stderr_max, stop)
        finally:
            kill_group(proc)
            proc.wait()
    return BoundedResult(
        exit_code=proc.returncode,
        stdout=bytes(out[0]),
        stderr=bytes(err[0]),
        timed_out=timed_out,
        stdout_truncated=out[1],
        stderr_truncated=err[1],
        duration_ms=(time.monotonic() - started) * 1000,
        stopped=bool(stop is not None and stop() and timed_out),
    )


def _communicate(
    proc: subprocess.Popen[bytes],
    stdin: bytes | None,
    deadline: float,
    stdout_max: int,
    stderr_max: int,
    stop: Callable[[], bool] | None = None,
) -> tuple[tuple[bytearray, bool], tuple[bytearray, bool], bool]:
    """The child's output and whether it was cut short (deadline passed, or ``stop()`` became true)."""
    buffers = {"out": (bytearray(), stdout_max), "err": (bytearray(), stderr_max)}
    truncated = {"out": False, "err": False}
    with selectors.DefaultSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        pending = memoryview(stdin or b"")
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin, selectors.EVENT_WRITE, "in")
            else:
                proc.stdin.close()
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop()):
                return (buffers["out"][0], truncated["out"]), (buffers["err"][0], truncated["err"]), True
            for key, _ in sel.select(timeout=min(remaining, 0.5 if stop is None else 0.1)):
                if key.data == "in":
                    pending = _feed(proc, sel, key, pending)
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf, cap = buffers[key.data]
                room = cap - len(buf)
                if room > 0:
                    buf += chunk[:room]
                if len(chunk) > max(room, 0):
                    truncated[key.data] = True
    remaining = deadline - time.monotonic()
    try:
        proc.wait(timeout=max(remaining, 0))
    except subprocess.TimeoutExpired:
        return (buffers["out"][0], truncated["out"]), (buffers["err"][0], truncated["err"]), True
    return (buffers["out"][0], truncated["out"]), (buffers["err"][0], truncated["err"]), False


def _feed(
    proc: subprocess.Popen[bytes], sel: selectors.BaseSelector, key: selectors.SelectorKey, pending: memoryview
) -> memoryview:
    assert proc.stdin is not None
    try:
        written = os.write(key.fd, pending[:65536])
        pending = pending[written:]
    except (BrokenPipeError, BlockingIOError) as exc:
        if isinstance(exc, BrokenPipeError):
            pending = pending[len(pending) :]
    if not pending:
        sel.unregister(key.fileobj)
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    return pending

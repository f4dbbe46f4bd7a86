"""Run the embedding command once: no shell, a cleared environment, rlimits, a deadline, bounded output.

The request goes in and the reply comes out through unlinked temporary files rather than pipes, so a
command that ignores its input or floods its output can neither deadlock us nor fill our memory: the
output is capped by ``RLIMIT_FSIZE`` in the child (the kernel stops the write), and the deadline by
killing the command's whole process group.  A limit of 0 means unlimited, as OPERATIONS.md notes for
PyTorch (which needs ``NPROC`` and ``AS`` unlimited).  The command runs in machina-embed's working
directory (``WorkingDirectory=`` under systemd), so relative paths in MACHINA_EMBED_CMD resolve there;
the program itself is looked up on a fixed PATH (:data:`COMMAND_ENV`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

# The whole environment of the command: no MACHINA_* value, token or secret of the service reaches it.
COMMAND_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
STDERR_TAIL = 2000


@dataclass(frozen=True)
class Limits:
    """rlimits of the command; 0 means unlimited."""

    cpu_ms: int = 0
    as_mb: int = 0
    nproc: int = 0
    nofile: int = 0
    fsize_bytes: int = 0

    def pairs(self) -> list[tuple[int, int]]:
        wanted = [
            # RLIMIT_CPU counts whole seconds; round up so a small budget is not 0 (= unlimited).
            (resource.RLIMIT_CPU, -(-self.cpu_ms // 1000)),
            (resource.RLIMIT_AS, self.as_mb * 1024 * 1024),
            (resource.RLIMIT_NPROC, self.nproc),
            (resource.RLIMIT_NOFILE, self.nofile),
            (resource.RLIMIT_FSIZE, self.fsize_bytes),
        ]
        return [(which, value) for which, value in wanted if value > 0]


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None when killed at the deadline
    stdout: bytes
    stderr_tail: str
    timed_out: bool
    output_capped: bool  # stdout reached the size cap
    duration_ms: int


def _apply_limits(pairs: list[tuple[int, int]]) -> None:  # runs in the child between fork and exec
    for which, value in pairs:
        _soft, hard = resource.getrlimit(which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (cap, cap))


def run_command(argv: tuple[str, ...], request: bytes, *, timeout_s: float, limits: Limits) -> Outcome:
    """Run ``argv`` with ``request`` on stdin; raises OSError when it cannot be started at all."""
    started = time.monotonic()
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        stdin.write(request)
        stdin.seek(0)
        pairs = limits.pairs()
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=COMMAND_ENV,
            close_fds=True,
            start_new_session=True,  # its own process group, so the deadline kills helpers it forked too
            preexec_fn=(lambda: _apply_limits(pairs)) if pairs else None,  # only setrlimit calls
        )
        timed_out = False
        try:
            returncode: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out, returncode = True, None
        finally:
            # Kill what is left of the group (also stray children of a command that exited).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stdout.seek(0)
        out = stdout.read()
        stderr.seek(0, os.SEEK_END)
        stderr.seek(max(0, stderr.tell() - STDERR_TAIL))
        err = stderr.read().decode("utf-8", "replace")
    capped = bool(limits.fsize_bytes) and len(out) >= limits.fsize_bytes
    return Outcome(returncode, out, err, timed_out, capped, int((time.monotonic() - started) * 1000))

"""The worker's handle on one job child: start it, hand it jobs, read its answers, stop or kill it.

A child runs ``python -P -m machina.worker.child`` (``-P``: nothing from the working directory is
importable, and the working directory is ``/``) with the cleared environment of
:func:`machina.worker.protocol.child_environment`, in a session of its own so that a kill reaches every
process in its group, with one end of a ``socketpair`` as its only channel.  Its stdout and stderr go to
the worker's stderr (the journal): nothing a job prints can be taken for a message.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from machina.exitcodes import ExitCode, MachinaError
from machina.proctree import kill_group
from machina.worker import protocol
from machina.worker.results import exit_reason

#: How a child is started; a test's launcher may point it at its own child script (see tests/worker).
CHILD_COMMAND: list[str] = [sys.executable, "-P", "-m", "machina.worker.child"]
#: A child that has not said ``ready`` by then is killed: Python and the catalog load in well under 1 s.
START_TIMEOUT_S = 60.0
#: How long a child asked to exit may take before it is killed.
EXIT_TIMEOUT_S = 2.0


class ChildStartError(MachinaError):
    """A job child could not be started or did not get ready (the exit code says how serious)."""


class JobChild:
    def __init__(self, proc: subprocess.Popen[bytes], conn: protocol.Channel) -> None:
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid
        self.jobs = 0  #: jobs this child has run
        self.started = time.monotonic()

    @classmethod
    def spawn(
        cls,
        init: Mapping[str, Any],
        command: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> JobChild:
        """Start a child and send it ``init``; it says ``ready`` later (:meth:`wait_ready`).

        Raises ChildStartError when the process cannot be started (fork or exec failed)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [*(command or CHILD_COMMAND), str(theirs.fileno()), str(os.getpid())]
        try:
            proc = subprocess.Popen(
                argv,
                env=protocol.child_environment(os.environ if environ is None else environ),
                stdin=subprocess.DEVNULL,
                stdout=2,
                cwd="/",
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            raise ChildStartError(f"cannot start a job child ({argv[0]}): {exc}", ExitCode.OSERR) from None
        finally:
            theirs.close()
        child = cls(proc, protocol.Channel(ours))
        with contextlib.suppress(OSError):  # it died at once: wait_ready says why
            child.conn.send(init)
        return child

    def wait_ready(self, timeout: float = START_TIMEOUT_S, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Wait for ``ready``; on anything else (or ``cancelled()``) kill the child and raise ChildStartError."""
        deadline = time.monotonic() + timeout
        try:
            while not self.conn.poll(min(0.1, max(deadline - time.monotonic(), 0))):
                if cancelled():
                    raise ChildStartError(f"job child {self.pid} no longer needed")
                if time.monotonic() >= deadline:
                    raise ChildStartError(f"job child {self.pid} did not get ready within {timeout:g} s")
            message = self.conn.receive()
        except EOFError:
            reason = exit_reason(self.kill())
            raise ChildStartError(f"job child {self.pid} ended before it was ready ({reason})") from None
        except (OSError, protocol.ProtocolViolation, ChildStartError) as exc:
            self.kill()
            raise ChildStartError(str(exc)) from None
        if message.get("op") == protocol.READY:
            return
        self.kill()
        code = message.get("exit_code")
        exit_code = ExitCode(code) if code in set(ExitCode) else ExitCode.UNAVAILABLE
        raise ChildStartError(f"job child cannot start: {message.get('error', message)}", exit_code)

    # --- jobs ------------------------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> None:
        self.conn.send(message)

    def poll(self, timeout: float) -> bool:
        """True when a message (or the end of the pipe) is waiting."""
        try:
            return self.conn.poll(timeout)
        except (OSError, ValueError):
            return True  # receive() will say what happened

    def receive(self) -> dict[str, Any]:
        return self.conn.receive()

    # --- ending ----------------------------------------------------------------------------------------
    #
    # The group is killed before the child is collected: while the child is unreaped its pid cannot be
    # reused, so ``killpg(pid)`` reaches its own group and nobody else's.

    @property
    def returncode(self) -> int | None:
        """The child's return code once collected (negative: killed by that signal)."""
        return self.proc.returncode

    def exited(self) -> bool:
        """True when the child has exited (its group then killed and its status collected)."""
        if self.proc.returncode is not None:
            return True
        try:
            gone = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            gone = True
        if gone:
            self.kill()
        return gone

    def kill(self) -> int:
        """SIGKILL the child's whole process group, collect the child; its return code."""
        if self.proc.returncode is None:
            kill_group(self.proc)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # killed between fork and setsid: not yet the leader of its own group
        returncode = self.proc.wait()
        self.close()
        return returncode

    def ask_to_exit(self) -> None:
        """Ask an idle child to exit; :meth:`finish_exit` collects it."""
        with contextlib.suppress(OSError):
            self.conn.send({"op": protocol.EXIT})
        self.close()

    def finish_exit(self, deadline: float) -> bool:
        """True once the child asked to exit is gone; killed when ``deadline`` (monotonic) has passed."""
        if self.exited():
            return True
        if time.monotonic() >= deadline:
            self.kill()
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()

    def __repr__(self) -> str:
        return f"<JobChild pid={self.pid} jobs={self.jobs}>"

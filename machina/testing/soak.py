"""A restart soak (issue 19): start and stop each daemon many times, half by SIGTERM and half by SIGKILL
followed by a fresh start, and check that nothing accumulates.

    soak = Soak(workdir)             # a fresh root, a private $TMPDIR and a notify socket under workdir
    report = soak.cycle("toolhost", 10)
    soak.close()

Every daemon runs as an operator would start it (``python -m machina.entrypoints <name> --root ROOT``) with
``NOTIFY_SOCKET`` pointing at our datagram socket: a start counts once the daemon's own pid says READY=1,
which for ``machina up`` means every child is ready.  A start after a SIGKILL that does not get ready is a
failure (a stale socket, pid file or lock blocking it).  Loopback only; the only pids ever signalled are
the ones started here, and those their state file names (``machina up``'s children, read before the kill).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from machina.proctree import child_pids, pid_alive
from machina.root import init_root
from machina.up.notifysock import NotifySocket

TOKEN = "soak-token-0123456789abcdef"  # noqa: S105 - a loopback test token, not a secret
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 120.0
DAEMONS = ("toolhost", "embed", "enqueued", "worker", "up")
POOLED_TOOL = "AID.PROC.SELF_METRICS.v1"  # the toolhost soak's request: no input, run in a pooled executor
#: What must run beside a daemon for it to get ready (a worker's job children need the toolhost).
NEEDS = {"worker": ("toolhost",)}


class SoakFailure(RuntimeError):
    pass


@dataclass
class CycleReport:
    daemon: str
    cycles: int = 0
    term_clean: int = 0  # SIGTERM answered with exit 0
    killed: int = 0
    ready_after_kill: int = 0  # fresh starts after a SIGKILL that got ready (nothing stale blocked them)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Usage:
    """What a directory tree holds: entries and bytes allocated (``du``'s figure)."""

    entries: int
    bytes: int

    def __str__(self) -> str:
        return f"{self.entries} entries, {self.bytes / 1024:.0f} KiB"


def usage(path: str) -> Usage:
    entries = allocated = 0
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                entries += 1
                allocated += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return Usage(entries, allocated)


def descendants_of(pid: int) -> list[int]:
    """Every process below ``pid`` now (children, their children, ...), from /proc."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Soak:
    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.root = os.path.join(workdir, "root")
        self.tmpdir = os.path.join(workdir, "tmp")
        self.logs = os.path.join(workdir, "logs")
        init_root(self.root)
        os.makedirs(self.tmpdir, mode=0o700, exist_ok=True)
        os.makedirs(self.logs, mode=0o700, exist_ok=True)
        self.port = free_port()
        self.notify = NotifySocket(os.path.join(workdir, "notify"))
        self.started: set[int] = set()
        self._procs: list[subprocess.Popen[bytes]] = []  # those that may still run
        self._all: list[subprocess.Popen[bytes]] = []

    @property
    def run_dir(self) -> str:
        return os.path.join(self.root, "run")

    def close(self) -> None:
        """Stop whatever is still running (an interrupted soak), then drop the notify socket."""
        for proc in self._procs:
            if proc.poll() is None:
                self.stop(proc, signal.SIGKILL)
        self.notify.close()

    # --- one daemon ------------------------------------------------------------------------------------

    def command(self, daemon: str) -> list[str]:
        base = [sys.executable, "-m", "machina.entrypoints"]
        if daemon == "up":
            return [*base, "machina", "up", "--workers", "1"]
        if daemon == "worker":
            return [*base, "machina-worker", "--id", "1"]
        if daemon == "enqueued":
            return [*base, "machina-enqueued", "--host", "127.0.0.1", "--port", str(self.port)]
        return [*base, f"machina-{daemon}"]

    def environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_ROOT": self.root,
            "MACHINA_API_TOKEN": TOKEN,
            "MACHINA_API_PORT": str(self.port),
            "TMPDIR": self.tmpdir,
            "NOTIFY_SOCKET": self.notify.path,
        }

    def start(self, daemon: str) -> subprocess.Popen[bytes]:
        """Start ``daemon`` and wait for its READY=1; SoakFailure (after killing it) when it never comes."""
        with open(os.path.join(self.logs, f"{daemon}.log"), "ab") as log:
            proc = subprocess.Popen(
                self.command(daemon),
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.started.add(proc.pid)
        self._procs = [p for p in self._procs if p.returncode is None] + [proc]
        self._all.append(proc)
        try:
            self._wait_ready(proc)
        except SoakFailure:
            self.stop(proc, signal.SIGKILL)
            raise
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SoakFailure(f"pid {proc.pid} exited with {proc.returncode} before READY=1")
            readable, _, _ = select.select([self.notify], [], [], 0.2)
            if readable and any(
                note.pid == proc.pid and note.fields.get("READY") == "1" for note in self.notify.receive()
            ):
                return
        raise SoakFailure(f"pid {proc.pid} not ready within {READY_TIMEOUT_S:g}s")

    def stop(self, proc: subprocess.Popen[bytes], sig: int) -> tuple[int, list[int]]:
        """Signal the daemon and wait for it and everything it started to go.

        Returns its exit status and the descendants that outlived it (killed here: they are ours).  After
        a SIGKILL, PR_SET_PDEATHSIG is what ends them (executors, job children, machina up's children).
        """
        descendants = descendants_of(proc.pid) if proc.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and any(pid_alive(p) for p in descendants):
            time.sleep(0.1)
        survivors = [pid for pid in descendants if pid_alive(pid)]
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return code, survivors

    # --- the soak --------------------------------------------------------------------------------------

    def cycle(self, daemon: str, cycles: int, progress: Callable[[str], None] | None = None) -> CycleReport:
        """``cycles`` start/stop rounds: even ones end by SIGTERM, odd ones by SIGKILL, after which the next
        start must find its way past what the killed one left.  A closing start and SIGTERM follow, so the
        last kill's leftovers are swept before anyone measures."""
        with contextlib.ExitStack() as beside:
            for needed in NEEDS.get(daemon, ()):
                beside.enter_context(self.running(needed))
            return self._cycle(daemon, cycles, progress)

    def _cycle(self, daemon: str, cycles: int, progress: Callable[[str], None] | None) -> CycleReport:
        report = CycleReport(daemon)
        began = time.monotonic()
        after_kill = False
        for n in range(cycles + 1):
            closing = n == cycles
            try:
                proc = self.start(daemon)
            except SoakFailure as exc:
                report.failures.append(f"start {n}{' after a SIGKILL' if after_kill else ''}: {exc}")
                after_kill = False
                continue
            report.ready_after_kill += after_kill
            sig = signal.SIGTERM if closing or n % 2 == 0 else signal.SIGKILL
            code, survivors = self.stop(proc, sig)
            if survivors:
                report.failures.append(f"round {n}: pids {survivors} outlived {daemon} (pid {proc.pid})")
            if sig == signal.SIGTERM and code != 0:
                report.failures.append(f"round {n}: SIGTERM gave exit {code}")
            if not closing:
                report.cycles += 1
                report.term_clean += sig == signal.SIGTERM and code == 0
                report.killed += sig == signal.SIGKILL
            after_kill = sig == signal.SIGKILL
            if progress is not None and not closing and (n + 1) % 20 == 0:
                progress(f"{daemon}: {n + 1}/{cycles}")
        report.seconds = time.monotonic() - began
        return report

    @contextlib.contextmanager
    def running(self, daemon: str) -> Iterator[subprocess.Popen[bytes]]:
        proc = self.start(daemon)
        try:
            yield proc
        finally:
            self.stop(proc, signal.SIGTERM)

    # --- file descriptors of a long-running daemon ----------------------------------------------------

    def fd_samples(self, daemon: str, checkpoints: list[int], reconnect_every: int = 100) -> list[tuple[int, int]]:
        """Open fds of ``daemon`` after each checkpoint's number of requests (a tool call, an embedding, an
        HTTP request): ``[(requests, fds), ...]``.  The client reconnects every ``reconnect_every``
        requests, so accepted connections count too."""
        request = {"toolhost": self._toolhost_requests, "embed": self._embed_requests, "enqueued": self._http_requests}
        samples = []
        with self.running(daemon) as proc:
            done = 0
            for checkpoint in sorted(checkpoints):
                request[daemon](checkpoint - done, reconnect_every)
                done = checkpoint
                samples.append((checkpoint, open_fds(proc.pid)))
        return samples

    def fd_figures(self, daemon: str, first: int, total: int) -> tuple[int, int]:
        """Open fds after ``first`` and after ``total`` requests."""
        (_, after_first), (_, after_total) = self.fd_samples(daemon, [first, total])
        return after_first, after_total

    def _toolhost_requests(self, count: int, batch: int) -> None:
        from machina.toolhost.client import ToolhostClient

        socket_path = os.path.join(self.run_dir, "toolhost.sock")
        for start in range(0, count, batch):
            with contextlib.closing(ToolhostClient(socket_path, timeout=60)) as client:
                for _ in range(min(batch, count - start)):
                    # A pooled tool (NOOP runs inline): every call goes through an executor, whose sockets
                    # and pipes are what a leak per call would leave open.
                    reply = client.call(POOLED_TOOL, {})
                    if not reply.ok:
                        raise SoakFailure(f"{POOLED_TOOL} failed: {reply.status} {reply.error}")

    def _embed_requests(self, count: int, batch: int) -> None:
        from machina.embed.client import EmbedClient

        socket_path = os.path.join(self.run_dir, "embed.sock")
        for start in range(0, count, batch):
            with EmbedClient(socket_path, timeout=60) as client:
                for n in range(min(batch, count - start)):
                    client.embed([f"request {start + n}"])

    def _http_requests(self, count: int, batch: int) -> None:
        import http.client

        for start in range(0, count, batch):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                for _ in range(min(batch, count - start)):
                    conn.request("GET", "/health")
                    answer = conn.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise SoakFailure(f"GET /health answered {answer.status}")
            finally:
                conn.close()

    def leftover_processes(self) -> list[int]:
        """Daemons started here that still run (by their Popen, not by pid: pids are reused)."""
        return sorted(proc.pid for proc in self._all if proc.poll() is None)

"""The ``machina up`` supervisor: start children, watch them, restart them with backoff, stop them all.

Single-threaded and the only user of child processes in its own process (it reaps with ``waitpid(-1)``).
Children are started in their own sessions, so a Ctrl-C at the terminal reaches only the supervisor, which
then stops them in order: SIGTERM, wait up to each child's stop timeout, SIGKILL.  Two guards make sure
nothing outlives it: each child gets ``PR_SET_PDEATHSIG`` (SIGTERM if the supervisor dies, even by SIGKILL),
and the supervisor is a child subreaper, so descendants orphaned by a dying child are reparented to it and
killed at stop instead of escaping to init.

States follow supervisor(1)'s model, with the transitions written where they happen::

    PENDING -> STARTING -> RUNNING -> STOPPING -> STOPPED
                  |           |
                  +-----------+--> BACKOFF -> STARTING        (crash, watchdog or start timeout)
                              +--> FATAL                       (exit 78: bad configuration)
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import prctl

from machina.backoff import Backoff
from machina.clock import SYSTEM_CLOCK, Clock
from machina.exitcodes import ExitCode
from machina.fsutil import write_atomic
from machina.notify import Notifier
from machina.owned import creating
from machina.proctree import child_pids, signal_group
from machina.up.notifysock import Notification, NotifySocket
from machina.up.pidfiles import pidfile_path, remove_pidfile, write_pidfile

log = logging.getLogger(__name__)

STATE_FILE = "machina-up.json"
NOTIFY_SOCKET_NAME = "machina-up.notify"
SUPERVISOR_PIDFILE = "machina-up"
# What systemd would not pass on to a service: its own notify, watchdog and socket-activation variables.
_SCRUBBED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
KILL_GRACE = 5.0  # seconds between the watchdog's SIGABRT and a SIGKILL, as systemd's TimeoutAbortSec


class State(enum.Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FATAL = "fatal"


ALIVE = frozenset({State.STARTING, State.RUNNING, State.STOPPING})


@dataclass(frozen=True)
class ChildSpec:
    """One child: what a unit's ExecStart=, WatchdogSec=, TimeoutStartSec= and TimeoutStopSec= say."""

    name: str
    argv: tuple[str, ...]
    executable: str  # the name its command line must show (pid files are checked against it)
    wave: int = 0  # children of a wave start once every child of the earlier waves is ready
    watchdog_sec: float | None = None
    start_timeout: float = 90.0
    stop_timeout: float = 30.0
    # How `machina status` checks it beyond its pid: ("socket", path) or ("http", health URL).
    probe: tuple[str, str] | None = None


@dataclass
class Child:
    spec: ChildSpec
    backoff: Backoff
    state: State = State.PENDING
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    last_ping: float = 0.0
    restart_at: float = 0.0
    kill_at: float | None = None
    restarts: int = 0
    last_exit: str = ""
    since: float = field(default=0.0)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.state in ALIVE else None


class Supervisor:
    def __init__(
        self,
        specs: list[ChildSpec],
        runtime_dir: str,
        env: Mapping[str, str],
        *,
        endpoints: Mapping[str, str] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        backoff: Callable[[], Backoff] = Backoff,
        on_ready: Callable[[], None] | None = None,
        notifier: Notifier | None = None,
        tick: float = 0.2,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names in {names}")
        self.children = [Child(spec, backoff()) for spec in specs]
        self.runtime_dir = runtime_dir
        self.env = {k: v for k, v in env.items() if k not in _SCRUBBED}
        self.endpoints = dict(endpoints or {})
        self.clock = clock
        self.on_ready = on_ready
        self.notifier = notifier or Notifier()
        self.tick = tick
        self.fatal: Child | None = None
        self._announced = False
        self._notify: NotifySocket | None = None

    # --- the loop ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> ExitCode:
        """Run until ``stop`` is set (or a child reports a configuration error); then stop every child."""
        with creating():  # a read-only or full runtime dir: one line naming it, exit 73
            self._notify = NotifySocket(os.path.join(self.runtime_dir, NOTIFY_SOCKET_NAME))
            try:
                write_pidfile(pidfile_path(self.runtime_dir, SUPERVISOR_PIDFILE), os.getpid())
            except BaseException:
                self._notify.close()
                raise
        previous_subreaper = prctl.get_child_subreaper()
        prctl.set_child_subreaper(True)
        try:
            while not stop.is_set() and self.fatal is None:
                self._start_due()
                self._wait_events(self.tick)
                self._reap()
                self._check_deadlines()
                self._announce_when_ready()
            self.notifier.stopping("stopping children")
            self.stop_all()
        finally:
            self._notify.close()
            prctl.set_child_subreaper(previous_subreaper)
            remove_pidfile(pidfile_path(self.runtime_dir, SUPERVISOR_PIDFILE))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.runtime_dir, STATE_FILE))
        if self.fatal is not None:
            return ExitCode.CONFIG
        return ExitCode.OK

    def _start_due(self) -> None:
        now = self.clock.monotonic()
        open_wave = self._open_wave()
        for child in self.children:
            first_start = child.state is State.PENDING and child.spec.wave <= open_wave
            restart = child.state is State.BACKOFF and now >= child.restart_at
            if first_start or restart:
                self._spawn(child)

    def _open_wave(self) -> int:
        """The highest wave allowed to start: every child of an earlier wave is ready (or given up on)."""
        waves = sorted({c.spec.wave for c in self.children})
        for wave in waves:
            earlier = [c for c in self.children if c.spec.wave == wave]
            if any(c.state in (State.PENDING, State.STARTING) for c in earlier):
                return wave
        return waves[-1] if waves else 0

    def _wait_events(self, timeout: float) -> None:
        assert self._notify is not None
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([self._notify], [], [], timeout)
            if readable:
                for note in self._notify.receive():
                    self._on_notification(note)

    def _on_notification(self, note: Notification) -> None:
        child = self._by_pid(note.pid)
        if child is None:
            return  # NotifyAccess=main: only a child's main process speaks for it
        now = self.clock.monotonic()
        if note.fields.get("WATCHDOG") == "1":
            child.last_ping = now
        if note.fields.get("READY") == "1" and child.state is State.STARTING:
            child.last_ping = now
            self._set_state(child, State.RUNNING)
            log.info("%s ready (pid %d)", child.spec.name, note.pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self._by_pid(pid)
            if child is None:
                continue  # an orphaned descendant reparented to us (we are a subreaper): reaped, done
            self._on_exit(child, status)

    def _on_exit(self, child: Child, status: int) -> None:
        assert child.proc is not None
        code = os.waitstatus_to_exitcode(status)
        child.proc.returncode = code  # reaped here, not by Popen
        _kill_group(child.proc.pid, signal.SIGKILL)  # KillMode=mixed: what the main process left behind
        remove_pidfile(pidfile_path(self.runtime_dir, child.spec.name))
        child.last_exit = describe_exit(code)
        child.kill_at = None
        now = self.clock.monotonic()
        if child.state is State.STOPPING:
            self._set_state(child, State.STOPPED)
            return
        if code == ExitCode.CONFIG:
            log.error("%s %s (bad configuration): stopping everything", child.spec.name, child.last_exit)
            self._set_state(child, State.FATAL)
            self.fatal = child
            return
        child.backoff.ran_for(now - child.started_at)
        delay = child.backoff.delay()
        child.restart_at = now + delay
        child.restarts += 1
        log.warning("%s %s; restarting in %.1fs", child.spec.name, child.last_exit, delay)
        self._set_state(child, State.BACKOFF)

    def _check_deadlines(self) -> None:
        now = self.clock.monotonic()
        for child in self.children:
            if child.proc is None or child.state not in ALIVE:
                continue
            if child.kill_at is not None:
                if now >= child.kill_at:
                    log.warning("%s still alive after SIGABRT: SIGKILL", child.spec.name)
                    _kill_group(child.proc.pid, signal.SIGKILL)
                    child.kill_at = now + KILL_GRACE
                continue
            if child.state is State.STARTING and now - child.started_at > child.spec.start_timeout:
                self._abort(child, f"not ready after {child.spec.start_timeout:g}s")
            elif (
                child.state is State.RUNNING
                and child.spec.watchdog_sec
                and now - child.last_ping > child.spec.watchdog_sec
            ):
                self._abort(child, f"watchdog timeout ({child.spec.watchdog_sec:g}s without WATCHDOG=1)")

    def _abort(self, child: Child, why: str) -> None:
        """As systemd does on a watchdog or start timeout: SIGABRT, then SIGKILL; the exit restarts it."""
        assert child.proc is not None
        log.warning("%s (pid %d) %s: aborting it", child.spec.name, child.proc.pid, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.proc.pid, signal.SIGABRT)
        child.kill_at = self.clock.monotonic() + KILL_GRACE

    def _announce_when_ready(self) -> None:
        if self._announced or not self.children:
            return
        if all(c.state is State.RUNNING for c in self.children):
            self._announced = True
            self.notifier.ready("all children ready")
            if self.on_ready is not None:
                self.on_ready()

    # --- starting and stopping ---------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        assert self._notify is not None
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = self._notify.path
        if child.spec.watchdog_sec:
            env["WATCHDOG_USEC"] = str(int(child.spec.watchdog_sec * 1_000_000))
        try:
            child.proc = subprocess.Popen(
                list(child.spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
        except OSError as exc:
            child.proc = None
            child.last_exit = f"could not start: {exc}"
            delay = child.backoff.delay()
            child.restart_at = self.clock.monotonic() + delay
            log.error("%s: %s; retrying in %.1fs", child.spec.name, exc, delay)
            self._set_state(child, State.BACKOFF)
            return
        now = self.clock.monotonic()
        child.started_at = child.last_ping = now
        try:
            write_pidfile(pidfile_path(self.runtime_dir, child.spec.name), child.proc.pid)
        except OSError as exc:  # the disk filled up meanwhile: the child runs all the same
            log.warning("cannot write the pid file of %s: %s", child.spec.name, exc)
        log.info("started %s (pid %d): %s", child.spec.name, child.proc.pid, " ".join(child.spec.argv))
        self._set_state(child, State.STARTING)

    def stop_all(self) -> None:
        """SIGTERM every child, wait up to its stop timeout, SIGKILL what is left, then kill orphans."""
        now = self.clock.monotonic()
        deadlines: dict[int, float] = {}
        for child in self.children:
            if child.proc is not None and child.state in ALIVE:
                self._set_state(child, State.STOPPING)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)
                deadlines[child.proc.pid] = now + child.spec.stop_timeout
            elif child.state in (State.PENDING, State.BACKOFF):
                self._set_state(child, State.STOPPED)
        killed: set[int] = set()
        while any(c.state is State.STOPPING for c in self.children):
            self._reap()
            now = self.clock.monotonic()
            for child in self.children:
                if child.state is State.STOPPING and child.proc is not None:
                    pid = child.proc.pid
                    if now >= deadlines[pid] and pid not in killed:
                        log.warning("%s did not stop within %gs: SIGKILL", child.spec.name, child.spec.stop_timeout)
                        _kill_group(pid, signal.SIGKILL)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        killed.add(pid)
            self.clock.sleep(0.05)
        self._kill_orphans()

    def _kill_orphans(self) -> None:
        """Descendants that outlived their parent were reparented to us (subreaper): none may survive us."""
        for _ in range(100):
            orphans = own_children()
            if not orphans:
                return
            for pid in orphans:
                log.warning("killing leftover descendant pid %d", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.clock.sleep(0.05)
            self._reap()

    # --- bookkeeping ---------------------------------------------------------------------------------------

    def _by_pid(self, pid: int) -> Child | None:
        for child in self.children:
            if child.proc is not None and child.proc.pid == pid and child.state in ALIVE:
                return child
        return None

    def _set_state(self, child: Child, state: State) -> None:
        child.state = state
        child.since = self.clock.time()
        self.write_state()

    def snapshot(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "executable": os.path.basename(sys.argv[0] or "machina"),
            "endpoints": self.endpoints,
            "components": {
                c.spec.name: {
                    "state": c.state.value,
                    "pid": c.pid,
                    "executable": c.spec.executable,
                    "restarts": c.restarts,
                    "last_exit": c.last_exit,
                    "since": c.since,
                    "probe": list(c.spec.probe) if c.spec.probe else None,
                }
                for c in self.children
            },
        }

    def write_state(self) -> None:
        """machina-up.json in the runtime dir: what ``machina status`` and the ops scripts read."""
        data = json.dumps(self.snapshot(), sort_keys=True, indent=1).encode() + b"\n"
        try:
            write_atomic(os.path.join(self.runtime_dir, STATE_FILE), data, fsync=False, mode=0o644)
        except OSError as exc:  # only `machina status` reads it: never a reason to stop supervising
            log.warning("cannot write %s: %s", STATE_FILE, exc)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def own_children() -> list[int]:
    """Pids whose parent is this process."""
    return child_pids(os.getpid())


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, however it dies."""
    prctl.set_pdeathsig(signal.SIGTERM)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    signal_group(pgid, sig)

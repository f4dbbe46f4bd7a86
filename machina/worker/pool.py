"""The worker's pool of pre-started job children.

The pool keeps ``size`` children alive: one per job slot, plus one spare, so that a slot whose child died,
timed out or was recycled takes a ready child at once instead of waiting for Python to start.  A starter
thread replaces every child that leaves the pool; when a child cannot be started (the toolhost is not
there, fork fails, the install is broken) it backs off (1 s doubling to 30 s, with jitter), logs why and
reports it as the worker's status, so no job is claimed, and no attempt spent, until children start again.
A child that cannot start because of the configuration (exit code 78) makes :attr:`fatal` say so: the
worker stops, as it would for a bad value at start.

Children asked to exit are collected by the same thread, and killed if they take too long.  It is also
the only thread that starts children, which matters twice: ``PR_SET_PDEATHSIG`` in a child fires when
the *thread* that started it ends, and orphans are told from children by the list kept under its lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from machina.backoff import Backoff
from machina.exitcodes import ExitCode
from machina.worker import orphans
from machina.worker.children import EXIT_TIMEOUT_S, ChildStartError, JobChild
from machina.worker.results import exit_reason

logger = logging.getLogger(__name__)

BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 30000
#: How often the starter thread looks at exiting children when nothing else wakes it.
HOUSEKEEPING_S = 0.5


class ChildPool:
    def __init__(
        self,
        start_child: Callable[[], JobChild],
        size: int,
        on_status: Callable[[str], None] = lambda text: None,
    ) -> None:
        self._start_child = start_child
        self.size = size
        self._on_status = on_status
        self._cond = threading.Condition()
        self._idle: list[JobChild] = []
        self._lent: set[JobChild] = set()
        self._starting: set[JobChild] = set()
        self._exiting: list[tuple[JobChild, float]] = []
        self._closing = False
        self._backoff = Backoff(BACKOFF_MIN_MS / 1000, BACKOFF_MAX_MS / 1000, jitter=True)
        self.problem: str | None = None  #: why children cannot be started right now
        self.fatal: ChildStartError | None = None  #: a start failure the worker must stop for
        self._thread = threading.Thread(target=self._run, name="child-starter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- for the job slots -----------------------------------------------------------------------------

    def wait_ready(self, count: int, stop: threading.Event, tick: Callable[[], None] = lambda: None) -> bool:
        """Wait until ``count`` children are ready; False when ``stop`` is set or a fatal error happened."""
        while not stop.is_set() and self.fatal is None:
            tick()
            with self._cond:
                if len(self._idle) >= count:
                    return True
                self._cond.wait(0.5)
        return False

    def acquire(self, timeout: float) -> JobChild | None:
        """A ready child for a job slot, or None after ``timeout`` seconds."""
        with self._cond:
            if not self._idle:
                self._cond.wait(timeout)
            if not self._idle or self._closing:
                return None
            child = self._idle.pop(0)
            self._lent.add(child)
            return child

    def give_back(self, child: JobChild) -> None:
        """A healthy child a slot no longer needs (the worker is stopping)."""
        with self._cond:
            self._lent.discard(child)
            self._idle.append(child)
            self._cond.notify_all()

    def retire(self, child: JobChild) -> None:
        """A healthy child leaves (recycled after its jobs): asked to exit, collected later, replaced now."""
        child.ask_to_exit()
        with self._cond:
            self._lent.discard(child)
            self._exiting.append((child, time.monotonic() + EXIT_TIMEOUT_S))
            self._cond.notify_all()

    def discard(self, child: JobChild) -> None:
        """A child that died or was killed leaves; what it started in other sessions is killed too."""
        child.kill()
        with self._cond:
            self._lent.discard(child)
            orphans.kill_orphans(self._pids())
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(ready idle children, children lent to slots)."""
        with self._cond:
            return len(self._idle), len(self._lent)

    # --- the starter thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._collect_exiting()
                if self._closing:
                    if not self._exiting:
                        return  # only now: the children die with this thread (PR_SET_PDEATHSIG)
                    self._cond.wait(0.02)
                    continue
                if self.fatal is not None or len(self._idle) + len(self._lent) >= self.size:
                    self._cond.wait(HOUSEKEEPING_S)
                    continue
            self._start_one()

    def _start_one(self) -> None:
        try:
            with self._cond:  # held while forking: kill_orphans must not take a new child for an orphan
                child = self._start_child()
                self._starting.add(child)
        except ChildStartError as exc:
            self._failed(exc)
            return
        failure: ChildStartError | None = None
        try:
            child.wait_ready(cancelled=lambda: self._closing)
        except ChildStartError as exc:
            failure = exc
        with self._cond:
            self._starting.discard(child)
            if self._closing:
                child.kill()
                return
            if failure is None:
                if self._backoff.failures or self.problem:
                    logger.info("job children start again (pid %d ready)", child.pid)
                self._backoff.reset()
                self.problem = None
                self._idle.append(child)
                self._cond.notify_all()
        if failure is not None:
            self._failed(failure)

    def _failed(self, exc: ChildStartError) -> None:
        delay = self._backoff.delay()
        if exc.exit_code == ExitCode.CONFIG:
            logger.error("%s", exc)
            self.fatal = exc
            with self._cond:
                self._cond.notify_all()
            return
        self.problem = f"{exc}; retrying in {delay:.1f} s"
        logger.error("cannot start a job child: %s", self.problem)
        self._on_status(f"cannot start a job child: {self.problem}")
        with self._cond:
            self._cond.wait_for(lambda: self._closing, delay)

    def _collect_exiting(self) -> None:
        """Collect children asked to exit (retired, or the worker stopping), and what they left behind."""
        still = []
        for child, deadline in self._exiting:
            if not child.finish_exit(deadline):
                still.append((child, deadline))
            elif child.returncode != 0:
                logger.warning("job child %d asked to exit ended %s", child.pid, exit_reason(child.returncode))
        collected = len(still) < len(self._exiting)
        self._exiting = still
        if collected:  # D15: a retired child's processes in sessions of their own were re-parented to us
            orphans.kill_orphans(self._pids())

    def _pids(self) -> set[int]:
        children = [*self._idle, *self._lent, *self._starting, *(c for c, _ in self._exiting)]
        return {c.pid for c in children}

    # --- shutdown --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Ask every child to exit and collect them all (killing laggards); the starter thread does it and
        then ends."""
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        with self._cond:
            self._closing = True
            for child in [*self._idle, *self._lent]:
                child.ask_to_exit()
                self._exiting.append((child, deadline))
            self._idle, self._lent = [], set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=EXIT_TIMEOUT_S + START_TIMEOUT_JOIN_S)
        with self._cond:  # never started, or stuck: collect here
            for child, _ in self._exiting:
                child.kill()
            self._exiting = []


#: A starter thread busy starting a child when the pool closes waits for it at most this long.
START_TIMEOUT_JOIN_S = 5.0

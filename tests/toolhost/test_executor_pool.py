"""ExecutorPool: executors go back to the pool and to waiting callers, retired ones are replaced, start
failures reach the callers.  The executors are real processes (``sleep``, each in its own group, as
bubblewrap's are) wrapped in the real Executor; only the sandbox launch is left out."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from machina.sandbox.policy import SandboxUnavailable
from machina.toolhost.pool import Executor, ExecutorFailed, ExecutorPool


def sleeping_executor() -> Executor:
    ours, theirs = socket.socketpair()
    theirs.close()
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True, stderr=subprocess.PIPE)
    return Executor(proc, ours, proc.stderr, lambda: None)


@pytest.fixture
def make_pool() -> Iterator[Callable[..., ExecutorPool]]:
    pools: list[ExecutorPool] = []

    def make(size: int = 1, recycle_after: int = 100, factory: Callable[[], Executor] = sleeping_executor):
        pool = ExecutorPool("test", factory, size, recycle_after)
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def wait_full(pool: ExecutorPool, size: int) -> None:
    deadline = time.monotonic() + 10
    while pool.started_total < size:
        assert time.monotonic() < deadline, "the spawner did not fill the pool"
        time.sleep(0.01)


def test_a_released_executor_is_the_next_one_handed_out(make_pool) -> None:
    pool = make_pool(size=2)
    wait_full(pool, 2)
    for _ in range(20):
        again = pool.acquire(10)
        pool.release(again, healthy=True)
    assert pool.stats()["retired"] == 0
    assert pool.started_total == 2  # the spawner filled the pool once and started nothing more


class Caller(threading.Thread):
    """A caller of ``pool.acquire`` on a thread of its own: what it got, or the error it got instead."""

    def __init__(self, pool: ExecutorPool) -> None:
        super().__init__()
        self.pool = pool
        self.got: Executor | None = None
        self.error: SandboxUnavailable | None = None
        self.start()

    def run(self) -> None:
        try:
            self.got = self.pool.acquire(10)
        except SandboxUnavailable as exc:
            self.error = exc


def test_a_caller_waiting_gets_the_executor_another_releases(make_pool) -> None:
    pool = make_pool(size=1)
    held = pool.acquire(10)
    waiter = Caller(pool)
    waiter.join(0.2)
    assert waiter.is_alive()  # none idle: it waits
    pool.release(held, healthy=True)
    waiter.join(10)
    assert waiter.got is held
    pool.release(held, healthy=True)


def test_a_retired_executor_is_replaced_for_the_caller_waiting(make_pool) -> None:
    pool = make_pool(size=1)
    broken = pool.acquire(10)
    waiter = Caller(pool)
    pool.release(broken, healthy=False)
    waiter.join(10)
    assert waiter.got is not None and waiter.got is not broken
    assert broken.proc.poll() is not None  # killed
    assert (pool.stats()["retired"], pool.started_total) == (1, 2)
    pool.release(waiter.got, healthy=True)


def test_a_worn_out_executor_is_replaced(make_pool) -> None:
    pool = make_pool(size=1, recycle_after=2)
    first = pool.acquire(10)
    first.calls = 2
    pool.release(first, healthy=True)
    second = pool.acquire(10)
    assert second is not first
    pool.release(second, healthy=True)


def test_a_start_failure_reaches_the_waiting_callers(make_pool) -> None:
    def failing() -> Executor:
        raise ExecutorFailed("bwrap: no permission")

    pool = make_pool(size=1, factory=failing)
    callers = [Caller(pool) for _ in range(3)]
    for caller in callers:
        caller.join(10)
    errors = [caller.error for caller in callers if caller.error is not None]
    assert len(errors) == 3 and all("bwrap: no permission" in str(e) for e in errors)


def test_closing_wakes_a_waiting_caller_and_the_spawner(make_pool) -> None:
    pool = make_pool(size=1)
    held = pool.acquire(10)
    waiter = Caller(pool)
    waiter.join(0.2)
    pool.close()
    waiter.join(5)
    assert not waiter.is_alive() and waiter.error is not None and "shutting down" in str(waiter.error)
    assert not pool._thread.is_alive()  # the spawner left its wait too
    held.kill()

"""Crash tests of the PostgreSQL queue with real kill -9: of worker processes (their claims come back,
nothing is lost, nothing is done twice) and of the database server itself (every acknowledged job is
still there after its crash recovery, and the workers reconnect and finish the run)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from pg_support import pg_server, pg_url, requires_postgres

from machina.queue import ClaimLost, QueueConfig, QueueUnavailable
from machina.queue.pg import PgQueue
from machina.testing.pgserver import PgServer

__all__ = ["pg_server", "pg_url"]  # fixtures, imported for pytest

T = TypeVar("T")
KIT = Path(__file__).with_name("queue_crashkit_pg.py")
CHECKOUT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, requires_postgres]


class Processes:
    """Kit processes started by a test, each ended by its pid at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, key: str, mode: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(KIT), self.url, mode, *args],
            stdout=subprocess.PIPE if mode == "enqueue" else subprocess.DEVNULL,
            cwd=CHECKOUT,
            text=True,
        )
        self.procs[key] = proc
        return proc

    def kill(self, key: str) -> None:
        proc = self.procs.pop(key)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        for key in list(self.procs):
            self.kill(key)


@pytest.fixture
def processes(pg_url: str) -> Iterator[Processes]:
    kit = Processes(pg_url)
    try:
        yield kit
    finally:
        kit.close()


def _queue(url: str, fsync: bool = False) -> PgQueue:
    return PgQueue(url, QueueConfig(url=url, fsync=fsync, scan_ms=20, retry_min_ms=0, retry_max_ms=0))


def enqueue_here(url: str, count: int) -> set[str]:
    with _queue(url) as queue:
        return {queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"n": n}}).name for n in range(count)}


def done_count(url: str) -> int:
    with _queue(url) as queue:
        return queue.stats().sizes["done"]


def drain_and_check(url: str, expected: set[str]) -> None:
    """What a restarted suite does (recover dead claims, run what is left), then: every job done exactly
    once (the done counter only moves on a real processing -> done transition)."""
    with _queue(url) as queue:
        queue.recover()
        while (claim := queue.claim("checker")) is not None:
            queue.complete(claim, {"by": "checker"})
        done = {job.name for job in queue.list_jobs("done")}
        stats = queue.stats()
    missing = expected - done
    assert not missing, f"acknowledged jobs lost: {sorted(missing)[:5]} ({len(missing)})"
    assert done == expected
    assert stats.counters["done"] == len(expected), "a job was completed twice"
    assert stats.sizes["processing"] == stats.sizes["inbox"] == 0


def test_workers_killed_at_random_lose_nothing(pg_url: str, processes: Processes) -> None:
    """300 jobs, three worker processes killed with SIGKILL at random and restarted: 0 lost, 0 done twice."""
    jobs = enqueue_here(pg_url, 300)
    rng = random.Random(17)
    for i in range(3):
        processes.start(f"w{i}", "serve", "--worker", f"w{i}", "--pause", "0.01")
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and done_count(pg_url) < len(jobs):
        time.sleep(rng.uniform(0.1, 0.4))
        victim = rng.choice(sorted(processes.procs))
        processes.kill(victim)
        kills += 1
        processes.start(victim, "serve", "--worker", victim, "--pause", "0.01")
    processes.close()
    assert kills >= 3
    drain_and_check(pg_url, jobs)


def _acked(lines: list[str]) -> set[str]:
    return {line.split()[1] for line in lines if line.startswith("ACK ")}


def test_database_killed_mid_run_loses_no_acknowledged_job(pg_server: PgServer, processes: Processes) -> None:
    """kill -9 of the postmaster while an enqueuer (synchronous_commit=on) and two workers run; after its
    restart (crash recovery) every acknowledged job is there, the workers reconnect and finish the run."""
    url = pg_server.create_schema("tests", "restart")
    processes.url = url
    enqueuer = processes.start("enqueuer", "enqueue", "--count", "150", "--pause", "0.01", "--fsync")
    for i in range(2):
        processes.start(f"w{i}", "serve", "--worker", f"w{i}", "--pause", "0.005", "--fsync")
    assert enqueuer.stdout is not None
    lines = [enqueuer.stdout.readline().strip() for _ in range(40)]
    pg_server.kill()
    acked_before_crash = _acked(lines)
    assert len(acked_before_crash) == 40
    pg_server.start()
    lines += [line.strip() for line in enqueuer.stdout]  # the enqueuer ends after its 150th ACK
    assert enqueuer.wait(timeout=120) == 0
    acked = _acked(lines)
    assert len(acked) == 150 and acked_before_crash <= acked
    deadline = time.monotonic() + 120
    while done_count(url) < 150 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done_count(url) == 150, "the workers did not finish the run after the database came back"
    processes.close()
    drain_and_check(url, acked)


def test_an_open_queue_carries_on_after_the_database_restarts(pg_server: PgServer) -> None:
    """The same PgQueue object before and after a kill -9 and restart of the server: a call may fail once
    per dead pooled connection (QueueUnavailable: "try again"), then everything works.  What was
    acknowledged survived (synchronous_commit=on); a claim does not wait for its WAL flush, so the claim
    held across the crash either survived (complete works) or is gone (ClaimLost, the job waits again)."""
    url = pg_server.create_schema("tests", "inproc")

    def again(call: Callable[[], T]) -> T:  # what every caller does with QueueUnavailable
        for _ in range(10):
            try:
                return call()
            except QueueUnavailable:
                continue
        raise AssertionError("still unavailable after 10 tries")

    with _queue(url, fsync=True) as queue:
        first = queue.enqueue({"goal_id": "goal.CRASH.v1"}).name
        held = queue.claim("w1")
        pg_server.kill()
        pg_server.start()
        try:
            again(lambda: queue.complete(held, {"ok": True}))
        except ClaimLost:
            assert queue.job_status(first).state == "inbox"
        second = again(lambda: queue.enqueue({"goal_id": "goal.CRASH.v1"})).name
        while (claim := again(lambda: queue.claim("w1"))) is not None:
            queue.complete(claim)
        assert [job.name for job in queue.list_jobs("done")] == sorted([first, second])
        assert queue.stats().counters["done"] == 2

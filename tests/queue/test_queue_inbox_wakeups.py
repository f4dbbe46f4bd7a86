"""The inbox index wakes as many waiting claimers as jobs arrived (real inotify), all of them for a change
in retry/, and none for a name another worker took away."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina.queue.inbox import InboxIndex

WAITERS = 4
SETTLE_S = 0.3  # time for any extra (wrong) wake-up to show


@pytest.fixture
def index(tmp_path: Path) -> Iterator[InboxIndex]:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "retry").mkdir()
    idx = InboxIndex(str(tmp_path / "inbox"), str(tmp_path / "retry"), scan_s=60.0)
    if not idx.start_watching():
        idx.stop()
        pytest.skip("inotify is not available here")
    assert idx.pop() is None  # the first scan: nothing stale from here on
    yield idx
    idx.stop()


class Waiters:
    """Threads each waiting once on the index, as idle claimers do; counts those that woke."""

    def __init__(self, index: InboxIndex, count: int) -> None:
        self.woke = 0
        self._lock = threading.Lock()
        self._ready = threading.Barrier(count + 1)
        self.threads = [threading.Thread(target=self._wait, args=(index,)) for _ in range(count)]
        for thread in self.threads:
            thread.start()
        self._ready.wait(5)
        time.sleep(0.1)  # let each reach the condition's wait after the barrier

    def _wait(self, index: InboxIndex) -> None:
        self._ready.wait(5)
        index.wait(10.0)
        with self._lock:
            self.woke += 1

    def woken_after(self, first: int) -> int:
        deadline = time.monotonic() + 5
        while self.woke < first and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(SETTLE_S)
        return self.woke

    def release(self, index: InboxIndex) -> None:
        index.notify()
        for thread in self.threads:
            thread.join(5)


def arrive(index: InboxIndex, tmp_path: Path, *names: str) -> None:
    for name in names:
        staged = tmp_path / f".{name}.tmp"
        staged.write_bytes(b"{}")
        os.rename(staged, tmp_path / "inbox" / name)


def test_one_job_wakes_one_claimer(index: InboxIndex, tmp_path: Path) -> None:
    waiters = Waiters(index, WAITERS)
    arrive(index, tmp_path, "p5000_a.json")
    assert waiters.woken_after(1) == 1
    waiters.release(index)


def test_two_jobs_wake_two_claimers(index: InboxIndex, tmp_path: Path) -> None:
    waiters = Waiters(index, WAITERS)
    arrive(index, tmp_path, "p5000_a.json", "p5000_b.json")
    woke = waiters.woken_after(2)
    assert woke == 2  # in one event batch or two: two woken either way
    waiters.release(index)


def test_a_change_in_retry_wakes_every_claimer(index: InboxIndex, tmp_path: Path) -> None:
    waiters = Waiters(index, WAITERS)
    (tmp_path / "retry" / "r_1_p5000_a.json").write_bytes(b"{}")
    assert waiters.woken_after(WAITERS) == WAITERS
    waiters.release(index)


def test_a_job_taken_away_wakes_nobody(index: InboxIndex, tmp_path: Path) -> None:
    arrive(index, tmp_path, "p5000_a.json")
    deadline = time.monotonic() + 5
    while index.pop() is None and time.monotonic() < deadline:  # this process has seen it
        time.sleep(0.01)
    waiters = Waiters(index, WAITERS)
    (tmp_path / "processing").mkdir()
    os.rename(tmp_path / "inbox" / "p5000_a.json", tmp_path / "processing" / "p5000_a.json")
    assert waiters.woken_after(0) == 0
    waiters.release(index)

"""Regression tests of the queue defects found in review (issue 11): each is named after its defect."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.clock import FakeClock
from machina.queue import FileQueue, QueueConfig, QueuedNotDurable, QueueNotWritable, faults
from machina.queue.claims import BOOT_ID, PROBE_WAIT_S, ClaimRegistry, Owner, foreign_registry
from machina.queue.dedup import DedupTable, Reservation
from machina.queue.durable import GroupCommit
from machina.queue.errors import DedupPending, WorkerIdInUse

WAIT_S = 10.0


@pytest.fixture
def make_queue(machina_root: Path) -> Iterator[Callable[..., FileQueue]]:
    opened: list[FileQueue] = []

    def make(**overrides: Any) -> FileQueue:
        clock = overrides.pop("clock", None)
        queue = FileQueue(
            str(machina_root), QueueConfig(**{"scan_ms": 20, **overrides}), **({"clock": clock} if clock else {})
        )
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()


@pytest.fixture
def fault_at() -> Iterator[Callable[[str, Callable[[], None]], None]]:
    """``fault_at(point, action)``: run ``action`` when the queue reaches the named point (machina.queue.faults)."""

    def arm(point: str, action: Callable[[], None]) -> None:
        def hook(name: str, context: dict[str, Any]) -> None:
            if name == point:
                action()

        faults.hook = hook

    yield arm
    faults.hook = None


def _fsync_fails() -> None:
    raise OSError(errno.EIO, "Input/output error")


# --- D6: "nothing was queued" for a job that was queued -----------------------------------------------------


@pytest.mark.parametrize("fsync", [False, True])
def test_d6_a_failed_fsync_after_placing_takes_the_job_back(
    make_queue: Any, machina_root: Path, fault_at: Any, fsync: bool
) -> None:
    q = make_queue(fsync=fsync)
    fault_at("enqueue.sync", _fsync_fails)
    with pytest.raises(QueueNotWritable, match="EIO"):
        q.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-undo")
    assert list((machina_root / "queue" / "inbox").iterdir()) == [], "refused means nothing was queued"
    faults.hook = None
    again = q.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-undo")
    assert not again.deduplicated, "the refused try left no dedup entry pointing at a job that is not there"
    other = make_queue(fsync=fsync)  # another process reads the WAL: the taken-back ENQ answers nothing
    assert other.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-undo").name == again.name
    assert q.stats().counters["enqueues_taken_back"] == 1


def test_d6_a_job_claimed_before_it_could_be_taken_back_is_named(
    make_queue: Any, machina_root: Path, fault_at: Any
) -> None:
    # Without the WAL the job is placed before its fsync; with it nothing is placed before the sync.
    q = make_queue(wal_enable=False)
    worker = make_queue(wal_enable=False)
    claimed: list[Any] = []

    def claim_then_fail() -> None:
        claimed.append(worker.claim("w1"))  # a worker is faster than the failing fsync
        _fsync_fails()

    fault_at("enqueue.sync", claim_then_fail)
    with pytest.raises(QueuedNotDurable) as caught:
        q.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-named")
    (claim,) = claimed
    assert caught.value.name == claim.name and claim.name in str(caught.value)
    assert caught.value.exit_code == 74
    faults.hook = None
    repeat = q.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-named")
    assert repeat.deduplicated and repeat.name == claim.name, "a resend is told the job it already has"


def test_d6_a_failed_wal_sync_is_never_placed_later_by_a_rebuild(
    make_queue: Any, machina_root: Path, fault_at: Any
) -> None:
    """The ENQ record of a refused job stays in the WAL; its UNENQ keeps every rebuild from placing it."""
    q = make_queue(fsync=True)
    fault_at("enqueue.sync", _fsync_fails)
    with pytest.raises(QueueNotWritable):
        q.enqueue({"goal_id": "goal.X.v1"}, request_id="d6-rebuild")
    faults.hook = None
    q.close()  # its segment is sealed: a rebuild may now read it
    other = make_queue(fsync=True)
    other.replay()
    assert other.checkpoint()
    assert list((machina_root / "queue" / "inbox").iterdir()) == []


# --- D7: the dedup table is never pruned with MACHINA_WAL_ENABLE=0 ---------------------------------------------


@pytest.mark.parametrize("wal_enable", [False, True])
def test_d7_maintain_prunes_expired_dedup_entries_with_or_without_the_wal(make_queue: Any, wal_enable: bool) -> None:
    clock = FakeClock()
    q = make_queue(clock=clock, wal_enable=wal_enable, dedup_ttl_ms=1000, checkpoint_ms=3_600_000)
    for n in range(50):
        q.enqueue({"goal_id": "goal.X.v1"}, request_id=f"d7-{n}")
    q.maintain()
    assert len(_dedup_ids(q)) == 50, "young entries are kept"
    clock.advance(2.0)  # the maintenance cadence follows the injected clock too
    q.maintain()
    assert _dedup_ids(q) == set()


def _dedup_ids(q: FileQueue) -> set[str]:
    """Request ids the queue holds in memory: its own recent ones and those read from the WAL."""
    return set(q._dedup._recent) | set(q._index.entries if q._index is not None else ())


# --- D10: claim liveness compared wall clocks across processes ------------------------------------------------


def test_d10_a_wall_clock_step_neither_recovers_a_live_claim_nor_hides_a_silent_one(make_queue: Any) -> None:
    clock = FakeClock()
    worker = make_queue(clock=clock, claim_timeout_ms=5000)
    name = worker.enqueue({"goal_id": "goal.X.v1"}).name
    claim = worker.claim("w1")
    sweeper = make_queue(clock=clock, claim_timeout_ms=5000)
    clock.jump(3600)  # NTP steps the wall clock an hour forward: the worker is as alive as before
    assert sweeper.recover() == []
    clock.jump(-7200)  # and back, past where it was
    clock.advance(4)
    worker.heartbeat(claim)
    clock.advance(6)  # silent for 6 s on the clock that does not jump
    assert sweeper.recover() == [name]


def test_d10_the_registry_records_the_boot_clock_and_an_old_registry_falls_back_to_the_wall_clock(
    make_queue: Any, machina_root: Path
) -> None:
    clock = FakeClock()
    worker = make_queue(clock=clock, claim_timeout_ms=5000)
    worker.enqueue({"goal_id": "goal.X.v1"})
    worker.claim("w1")
    with foreign_registry(str(machina_root / "state" / "claims" / "w1.json")) as (owner, dead, _fd):
        assert owner is not None and not dead
        assert owner.boot_id == BOOT_ID and owner.heartbeat_boot_ms == int(clock.boottime() * 1000)
    old = Owner("w2", 1, BOOT_ID, 1, int(clock.time() * 1000), {})  # written before heartbeat_boot_ms existed
    clock.jump(10)
    assert old.silent_ms(clock) == 10_000


# --- D14: group commit reported "synced" after a failure that was not an OSError ------------------------------


def test_d14_every_waiter_of_a_batch_that_failed_otherwise_hears_it_failed() -> None:
    first_inside, release_first = threading.Event(), threading.Event()
    calls: list[int] = []

    def wal_sync() -> None:
        calls.append(1)
        if len(calls) == 1:  # the first batch holds the leader's seat while two others queue up
            first_inside.set()
            release_first.wait(30)
            return
        raise RuntimeError("the WAL writer is in a state nobody expected")

    commit = GroupCommit(wal_sync)
    outcomes: dict[str, BaseException | None] = {}

    def sync(who: str) -> None:
        try:
            commit.sync()
            outcomes[who] = None
        except BaseException as exc:
            outcomes[who] = exc

    first = threading.Thread(target=sync, args=("first",))
    first.start()
    assert first_inside.wait(30)
    second = [threading.Thread(target=sync, args=(who,)) for who in ("a", "b")]
    for thread in second:
        thread.start()
    wait_until(lambda: commit.requests == 3)
    release_first.set()
    for thread in (first, *second):
        thread.join(30)
    commit.close()
    assert outcomes["first"] is None
    for who in ("a", "b"):  # one led the failing batch, the other followed it: neither may hear "synced"
        error = outcomes[who]
        assert isinstance(error, OSError) and error.errno == errno.EIO, outcomes
        assert "RuntimeError" in str(error)
    assert len(calls) == 2, "a and b shared one batch"


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# --- D16: copies of a request waited for the first copy without a bound ---------------------------------------


def test_d16_a_copy_waits_for_the_first_copy_only_so_long() -> None:
    table = DedupTable(ttl_ms=60_000, index=None, refresh_s=1.0, pending_wait_s=0.05)
    first = table.begin("rid-1", "sha-1", now_ms=1000)
    assert isinstance(first, Reservation)  # the first copy is being written, and hangs there
    with pytest.raises(DedupPending, match=r"rid-1.*still being queued.*nothing was queued by this one"):
        table.begin("rid-1", "sha-1", now_ms=1001)
    table.finish("rid-1", first, "p5000_rq_x.json", 1000)
    entry = table.begin("rid-1", "sha-1", now_ms=1002)
    assert not isinstance(entry, Reservation) and entry.name == "p5000_rq_x.json"
    assert DedupPending("r", 1.0).exit_code == 75


@pytest.mark.parametrize("end", ["finish", "abort"])
def test_d16_a_waiting_copy_wakes_when_the_first_copy_ends(end: str) -> None:
    """The wait is an Event made only for a copy that comes to wait: it must still be set by the end."""
    table = DedupTable(ttl_ms=60_000, index=None, refresh_s=1.0, pending_wait_s=30.0)
    first = table.begin("rid-2", "sha-2", now_ms=1000)
    assert isinstance(first, Reservation)
    answers: list[Any] = []
    copy = threading.Thread(target=lambda: answers.append(table.begin("rid-2", "sha-2", now_ms=1001)))
    copy.start()
    wait_until(lambda: first.waited_on is not None)  # the copy waits on the first copy's Event
    if end == "finish":
        table.finish("rid-2", first, "p5000_rq_y.json", 1000)
    else:
        table.abort("rid-2", first)
    copy.join(10.0)
    assert not copy.is_alive(), "the copy was not woken when the first copy ended"
    (answer,) = answers
    if end == "finish":
        assert not isinstance(answer, Reservation) and answer.name == "p5000_rq_y.json"
    else:
        assert isinstance(answer, Reservation), "the first copy gave up: the copy queues the request itself"


# --- a worker starting while a sweep in another process probes its registry ---------------------------------


def test_taking_a_worker_id_waits_out_a_probe_of_its_registry(machina_root: Path) -> None:
    """A recovery sweep takes every registry's lock for a moment to see whether its owner is alive.  A worker
    taking that id just then found the lock held and failed to start (WorkerIdInUse, seen as a thread error in
    the contract test of concurrent workers)."""
    claims_dir = machina_root / "state" / "claims"
    claims_dir.mkdir(parents=True, exist_ok=True)
    path = claims_dir / "w7.json"
    path.touch()  # a worker has just created it, and written nothing yet
    probing = threading.Event()
    done_probing = threading.Event()

    def probe() -> None:
        with foreign_registry(str(path)) as (owner, dead, _fd):
            assert owner is None and dead, "the probe holds the lock of a registry that names no owner"
            probing.set()
            done_probing.wait(WAIT_S)

    prober = threading.Thread(target=probe)
    prober.start()
    assert probing.wait(WAIT_S)
    threading.Timer(0.2, done_probing.set).start()  # the probe ends while the worker waits for the lock
    registry = ClaimRegistry(str(claims_dir), "w7", FakeClock())
    prober.join(WAIT_S)
    assert registry.owner.pid == os.getpid()
    registry.close()


def test_a_live_owner_still_keeps_its_worker_id(machina_root: Path) -> None:
    claims_dir = str(machina_root / "state" / "claims")
    first = ClaimRegistry(claims_dir, "w8", FakeClock())
    try:
        started = time.monotonic()
        with pytest.raises(WorkerIdInUse, match=rf"pid {os.getpid()}"):
            ClaimRegistry(claims_dir, "w8", FakeClock())
        assert time.monotonic() - started < PROBE_WAIT_S, "a live owner is refused at once, not waited for"
    finally:
        first.close()

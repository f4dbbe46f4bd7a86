"""Crash tests with real kill -9: after a restart every acknowledged job is done or pending, none is lost,
none is in done/ twice.

Each test runs a role of the queue in a child process (queue_crashkit.py) that dies by SIGKILL at a named
step (or at a random moment, killed by the parent), then restarts the queue here and drains it.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machina.clock import SystemClock
from machina.queue import FileQueue, QueueConfig
from machina.queue.names import parse_file
from machina.queue.wal import encode, list_segments
from machina.queue.walindex import read_checkpoint

KIT = Path(__file__).with_name("queue_crashkit.py")
CHECKOUT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_kit(root: Path, mode: str, *args: str, timeout: float = 60) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, str(KIT), str(root), mode, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=CHECKOUT,
    )
    return proc.returncode, proc.stdout.splitlines()


def names_after(lines: list[str], tag: str) -> set[str]:
    return {line.split()[1] for line in lines if line.startswith(tag + " ")}


def enqueue_here(root: Path, count: int) -> set[str]:
    with FileQueue(str(root)) as queue:
        return {queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"n": n}}).name for n in range(count)}


def restart_and_drain(root: Path) -> list[str]:
    """What a restarted suite does: recover dead claims, replay the WAL, run everything that is left."""
    queue = FileQueue(str(root), QueueConfig(scan_ms=20, retry_min_ms=0, retry_max_ms=0))
    try:
        queue.replay()
        queue.recover()
        assert os.listdir(root / "queue" / "tmp") == [], "a half-written job survived the restart"
        while (claim := queue.claim("checker")) is not None:
            queue.complete(claim, {"by": "checker"})
        assert queue.verify_wal().ok
    finally:
        queue.close()
    return os.listdir(root / "queue" / "done")


def assert_exactly_once(done_files: list[str], expected: set[str]) -> None:
    names = [parse_file(f).name for f in done_files]  # type: ignore[union-attr]
    assert len(names) == len(set(names)), f"a job is in done/ twice: {sorted(names)}"
    missing = expected - set(names)
    assert not missing, f"acknowledged jobs lost: {sorted(missing)}"


@pytest.mark.parametrize(
    "point", ["enqueue.logged", "enqueue.committed", "enqueue.tmp_written", "enqueue.placed", "wal.append"]
)
@pytest.mark.parametrize("fsync", [False, True])
def test_kill_during_enqueue(machina_root: Path, point: str, fsync: bool) -> None:
    extra = ["--fsync"] if fsync else []
    code, lines = run_kit(machina_root, "enqueue", "--count", "6", "--point", point, "--after", "4", *extra)
    assert code == -signal.SIGKILL
    acked = names_after(lines, "ACK")
    assert len(acked) == 3
    if point == "wal.append":
        from machina.queue import FileQueue as _FQ

        with _FQ(str(machina_root)) as look:
            assert not look.verify_wal().ok  # the torn record is there until a restart cuts it
    assert_exactly_once(restart_and_drain(machina_root), acked)


def _queued_names(root: Path) -> set[str]:
    return {parse_file(f).name for f in os.listdir(root / "queue" / "inbox")}  # type: ignore[union-attr]


@pytest.mark.parametrize("fsync", [False, True])
def test_kill_between_wal_sync_and_file_placement_places_the_job_from_the_wal(machina_root: Path, fsync: bool) -> None:
    """The commit point is the synced ENQ record: a job whose file was never written is placed from it."""
    extra = ["--fsync"] if fsync else []
    point = ["--point", "enqueue.committed", "--after", "4"]
    code, lines = run_kit(machina_root, "enqueue", "--count", "6", *point, *extra)
    assert code == -signal.SIGKILL
    acked = names_after(lines, "ACK")
    assert len(acked) == 3 and _queued_names(machina_root) == acked, "the 4th job's file was never written"
    with FileQueue(str(machina_root), QueueConfig(fsync=fsync)) as queue:
        queue.replay()
        rebuilt = _queued_names(machina_root) - acked
        assert len(rebuilt) == 1, "the committed job is placed from its WAL record"
        (name,) = rebuilt
        again = queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"i": 3}}, request_id="job-3")
        assert again.deduplicated and again.name == name, "a resend is told the job that was placed"
        request = queue.job_status(name, with_request=True).request
        assert request == {"goal_id": "goal.CRASH.v1", "inputs": {"i": 3}, "request_id": "job-3"}
    assert_exactly_once(restart_and_drain(machina_root), acked | rebuilt)


@pytest.mark.parametrize("point", ["enqueue.logged", "enqueue.committed", "enqueue.placed"])
def test_kill_inside_a_batch_commit(machina_root: Path, point: str) -> None:
    """machina-enqueued commits a batch of requests with one group commit: killed after the 3rd of 5 hits of
    a point, nothing was answered; once the records were synced every job of the batch is placed from
    them after the restart, and a resend of any of them is told its job."""
    code, lines = run_kit(machina_root, "batch", "--count", "5", "--point", point, "--after", "3", "--fsync")
    assert code == -signal.SIGKILL
    assert names_after(lines, "ACK") == set(), "nothing is answered before the whole batch is placed"
    with FileQueue(str(machina_root), QueueConfig(fsync=True)) as queue:
        queue.replay()
        queued = _queued_names(machina_root)
        if point != "enqueue.logged":
            assert len(queued) == 5, "every synced record of the batch is placed"
            for i in range(5):
                again = queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"i": i}}, request_id=f"job-{i}")
                assert again.deduplicated and again.name in queued
    assert_exactly_once(restart_and_drain(machina_root), queued)


def test_a_running_queue_places_the_jobs_of_an_enqueuer_killed_after_its_commit(machina_root: Path) -> None:
    """No restart needed: the next recovery sweep of a live process notices the dead writer's segment."""
    with FileQueue(str(machina_root), QueueConfig(fsync=True)) as queue:
        code, lines = run_kit(machina_root, "enqueue", "--count", "3", "--point", "enqueue.committed", "--after", "2")
        assert code == -signal.SIGKILL
        acked = names_after(lines, "ACK")
        assert len(acked) == 1
        queue.recover()
        assert len(_queued_names(machina_root) - acked) == 1
        queue.recover()  # a second sweep finds nothing more to do
        assert len(_queued_names(machina_root)) == 2
        queue.checkpoint()  # files synced: the records may go, and nothing is placed twice
    assert_exactly_once(restart_and_drain(machina_root), _queued_names(machina_root))


def test_kill_between_completion_record_and_file_move_finishes_without_rerunning(machina_root: Path) -> None:
    jobs = enqueue_here(machina_root, 4)
    code, lines = run_kit(machina_root, "work", "--worker", "w1", "--point", "complete.logged", "--after", "2")
    assert code == -signal.SIGKILL
    finished = names_after(lines, "DONE")
    assert len(finished) == 1
    processing = os.listdir(machina_root / "queue" / "processing")
    assert len(processing) == 1
    with FileQueue(str(machina_root)) as queue:
        assert queue.recover() == [parse_file(processing[0]).name]  # type: ignore[union-attr]
        status = queue.job_status(processing[0])
        assert status.state == "done" and status.attempt == 1, "completed, so moved on, not run again"
        assert [r["status"] for r in status.results] == ["done"]
    assert_exactly_once(restart_and_drain(machina_root), jobs)


def test_torn_wal_tail_keeps_dedup_of_acknowledged_jobs(machina_root: Path) -> None:
    code, lines = run_kit(machina_root, "enqueue", "--count", "5", "--point", "wal.append", "--after", "3")
    assert code == -signal.SIGKILL
    acked = sorted(names_after(lines, "ACK"))
    with FileQueue(str(machina_root)) as queue:
        queue.replay()
        assert queue.stats().counters["wal_truncations"] == 1
        for i, name in enumerate(acked):
            again = queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"i": i}}, request_id=f"job-{i}")
            assert again.deduplicated and again.name == name


@pytest.mark.parametrize(
    "point", ["claim.intent", "claim.moved", "complete.result", "complete.logged", "complete.moved", "wal.append"]
)
def test_kill_between_claim_and_result(machina_root: Path, point: str) -> None:
    jobs = enqueue_here(machina_root, 6)
    after = "6" if point == "wal.append" else "3"  # wal.append: the 3rd job's CLAIM record
    code, lines = run_kit(machina_root, "work", "--worker", "w1", "--point", point, "--after", after)
    assert code == -signal.SIGKILL
    assert len(names_after(lines, "DONE")) >= 2
    assert_exactly_once(restart_and_drain(machina_root), jobs)


def test_kill_while_failing_an_attempt(machina_root: Path) -> None:
    jobs = enqueue_here(machina_root, 4)
    code, _ = run_kit(machina_root, "fail", "--worker", "w1", "--point", "fail.result", "--after", "2")
    assert code == -signal.SIGKILL
    assert_exactly_once(restart_and_drain(machina_root), jobs)


def test_kill_during_recovery(machina_root: Path) -> None:
    jobs = enqueue_here(machina_root, 3)
    code, _ = run_kit(machina_root, "work", "--worker", "w1", "--point", "claim.moved", "--after", "1")
    assert code == -signal.SIGKILL
    code, _ = run_kit(machina_root, "recover", "--point", "recover.result", "--after", "1")
    assert code == -signal.SIGKILL
    assert_exactly_once(restart_and_drain(machina_root), jobs)


def test_restarted_worker_takes_back_its_own_claim(machina_root: Path) -> None:
    jobs = enqueue_here(machina_root, 2)
    code, _ = run_kit(machina_root, "work", "--worker", "w5", "--point", "claim.moved", "--after", "1")
    assert code == -signal.SIGKILL
    code, lines = run_kit(machina_root, "work", "--worker", "w5")
    assert code == 0 and names_after(lines, "DONE") == jobs
    with FileQueue(str(machina_root)) as queue:
        attempts = sorted(queue.job_status(name).attempt for name in jobs)
    assert attempts == [1, 2]  # the one it held when it died ran again as attempt 2


@pytest.mark.parametrize("next_owner", ["the same worker id", "a recovery sweep"])
def test_a_worker_killed_while_taking_over_its_id_leaves_the_claims_on_record(
    machina_root: Path, next_owner: str
) -> None:
    """A restarted worker killed right after taking its id over, before it recovered its predecessor's claim:
    the claim must still be on record for the next owner of the id, or for a sweep (found by
    test_workers_killed_at_random_lose_nothing: the job stayed in processing/ for MACHINA_CLAIM_TIMEOUT_MS)."""
    jobs = enqueue_here(machina_root, 2)
    code, _ = run_kit(machina_root, "work", "--worker", "w6", "--point", "claim.moved", "--after", "1")
    assert code == -signal.SIGKILL
    code, _ = run_kit(machina_root, "work", "--worker", "w6", "--point", "recover.takeover", "--after", "1")
    assert code == -signal.SIGKILL
    if next_owner == "the same worker id":
        code, lines = run_kit(machina_root, "work", "--worker", "w6")
        assert code == 0 and names_after(lines, "DONE") == jobs
    assert_exactly_once(restart_and_drain(machina_root), jobs)


class _NoSweepsDue(SystemClock):
    """Real time, but the monotonic clock that paces maintenance stands still: after its first claim, this
    queue runs no recovery sweep (which would clear a dead worker's registry before the takeover we test)."""

    def monotonic(self) -> float:
        return 1000.0


def test_a_restarted_worker_leaves_alone_a_job_it_recorded_but_another_worker_claimed(machina_root: Path) -> None:
    """Killed between recording a claim and the rename, a worker leaves that job in inbox/, and another worker
    claims it before any sweep: the restarted worker must not take that live claim away (the job would run
    twice, and the other worker's completion would be refused)."""
    jobs = enqueue_here(machina_root, 3)
    with FileQueue(str(machina_root), QueueConfig(scan_ms=20), clock=_NoSweepsDue()) as queue:
        first = queue.claim("w8")  # its one sweep happens here, before w7 dies
        code, _ = run_kit(machina_root, "work", "--worker", "w7", "--point", "claim.intent", "--after", "1")
        assert code == -signal.SIGKILL
        second = queue.claim("w8")  # the job w7 recorded and never moved
        assert first is not None and second is not None
        code, lines = run_kit(machina_root, "work", "--worker", "w7")  # takes over w7 while w8 holds that job
        assert code == 0 and names_after(lines, "DONE") == jobs - {first.name, second.name}
        queue.complete(first, {"by": "w8"})
        queue.complete(second, {"by": "w8"})
        assert queue.job_status(second.name).attempt == 1
    assert_exactly_once(restart_and_drain(machina_root), jobs)


def _synthetic_wal(root: Path, entries: int) -> dict[str, str]:
    """A sealed segment of ENQ records with request ids: makes checkpoints big (slow to write) cheaply."""
    rids = {f"rid-{n}": f"p5000_rq_1700000000000_{n:010x}.json" for n in range(entries)}
    now = int(time.time() * 1000)
    lines = [
        encode({"t": "ENQ", "ts": now, "name": name, "rid": rid, "sha": hashlib.sha256(rid.encode()).hexdigest()}, True)
        for rid, name in rids.items()
    ]
    (root / "queue" / "wal" / f"seg_{now:013d}_1_000000.wal").write_bytes(b"".join(lines))
    return rids


def test_kill_during_checkpoint_writes_never_leaves_a_corrupt_checkpoint(machina_root: Path) -> None:
    rids = _synthetic_wal(machina_root, 30_000)
    wal = machina_root / "queue" / "wal"
    rng = random.Random(3)
    for _round in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(KIT), str(machina_root), "checkpoint-loop"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=CHECKOUT,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "CKPT"
        time.sleep(rng.uniform(0.0, 0.15))  # lands inside a write most of the time: each takes tens of ms
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        read_checkpoint(str(wal / "checkpoint.json"))  # raises if torn or corrupt
    with FileQueue(str(machina_root), QueueConfig(dedup_ttl_ms=3_600_000)) as queue:
        queue.checkpoint()
        assert not [n for n in os.listdir(wal) if n.endswith(".tmp")]
        sample = rng.sample(sorted(rids), 20)
        for rid in sample:
            assert queue._index is not None and queue._index.lookup(rid, int(time.time() * 1000)).name == rids[rid]
        assert queue.stats().counters["enqueued"] == 30_000


def test_kill_after_checkpoint_before_segments_are_dropped_counts_nothing_twice(machina_root: Path) -> None:
    _synthetic_wal(machina_root, 100)
    code, _ = run_kit(machina_root, "checkpoint-loop", "--point", "checkpoint.written", "--after", "1")
    assert code == -signal.SIGKILL
    assert len(list_segments(str(machina_root / "queue" / "wal"))) >= 1  # covered, not yet deleted
    with FileQueue(str(machina_root)) as queue:
        assert queue.stats().counters["enqueued"] == 100
        queue.checkpoint()
        assert queue.stats().counters["enqueued"] == 100


def test_workers_killed_at_random_lose_nothing(machina_root: Path) -> None:
    """Three worker processes, killed with SIGKILL at random and restarted, drain 40 jobs."""
    jobs = enqueue_here(machina_root, 40)
    rng = random.Random(11)

    def start(worker: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(KIT), str(machina_root), "serve", "--worker", worker, "--pause", "0.08"],
            stdout=subprocess.DEVNULL,
            cwd=CHECKOUT,
            text=True,
        )
        return proc

    workers = {f"w{i}": start(f"w{i}") for i in range(3)}
    kills = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.25))
            done = len(os.listdir(machina_root / "queue" / "done"))
            if done >= len(jobs):
                break
            victim = rng.choice(sorted(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait(timeout=30)
            kills += 1
            workers[victim] = start(victim)
    finally:
        for proc in workers.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert kills >= 3
    assert_exactly_once(restart_and_drain(machina_root), jobs)

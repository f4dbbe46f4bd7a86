"""FileQueue on disk: the files it leaves, the WAL and checkpoint, garbage in the inbox, wake-up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.clock import FakeClock
from machina.queue import FileQueue, QueueConfig, faults, load_request
from machina.queue import inbox as inbox_module
from machina.queue.claims import BOOT_ID
from machina.queue.wal import decode, encode, list_segments
from machina.queue.walindex import read_checkpoint

CHECKOUT = Path(__file__).resolve().parents[2]


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


def qdir(root: Path, state: str) -> Path:
    return root / "queue" / state


def wal_records(root: Path) -> list[dict[str, Any]]:
    records = []
    for name in list_segments(str(qdir(root, "wal"))):
        for line in (qdir(root, "wal") / name).read_bytes().splitlines():
            records.append(decode(line))
    return records


# --- files ---------------------------------------------------------------------------------------------


def test_job_file_holds_the_canonical_body_and_nothing_is_left_in_tmp(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue(fsync=True)
    name = queue.enqueue({"inputs": {"b": 1, "a": 2}, "goal_id": "g"}, request_id="r-1").name
    body = (qdir(machina_root, "inbox") / name).read_bytes()
    assert body == b'{"goal_id":"g","inputs":{"a":2,"b":1},"request_id":"r-1"}'
    assert os.stat(qdir(machina_root, "inbox") / name).st_mode & 0o777 == 0o600
    assert os.listdir(qdir(machina_root, "tmp")) == []


def test_results_land_in_out_per_attempt(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue(retry_min_ms=0, retry_max_ms=0)
    name = queue.enqueue({"goal_id": "g"}).name
    stem = name[: -len(".json")]
    queue.fail(queue.claim("w1"), "first")
    queue.complete(queue.claim("w1"), {"n": 2})
    assert sorted(os.listdir(qdir(machina_root, "out"))) == [
        f"{stem}.attempt1.result.json",
        f"{stem}.attempt2.result.json",
    ]
    assert os.listdir(qdir(machina_root, "done")) == [f"{stem}.a2.json"]
    second = json.loads((qdir(machina_root, "out") / f"{stem}.attempt2.result.json").read_text())
    assert second["status"] == "done" and second["result"] == {"n": 2} and second["worker_id"] == "w1"


def test_status_finds_a_job_that_moves_to_retry_while_it_is_looked_for(make_queue: Any) -> None:
    """job_status looks in retry/ first, then the other places one by one: a job that fails over to retry/
    in between was once reported as an unknown job (seen in CI, a worker test polling a crashing job)."""
    worker = make_queue(retry_min_ms=60_000, retry_max_ms=60_000)
    name = worker.enqueue({"goal_id": "g"}).name
    claim = worker.claim("w1")
    assert claim is not None
    moved: list[str] = []

    def fail_over_once(point: str, context: dict[str, Any]) -> None:
        if point == "status.retry_scanned" and context["job"] == name and not moved:
            moved.append(worker.fail(claim, "crashed"))

    faults.hook = fail_over_once
    try:
        status = make_queue().job_status(name)
    finally:
        faults.hook = None
    assert moved, "the job was never moved during the lookup: the test tested nothing"
    assert status is not None, "a job that moved during the lookup was reported unknown"
    assert (status.state, status.attempt) == ("retry", 2)
    assert [r["status"] for r in status.results] == ["retry"]


def test_wal_records_every_transition(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue(wal_crc32=True)
    name = queue.enqueue({"goal_id": "g"}, request_id="rid").name
    queue.enqueue({"goal_id": "g"}, request_id="rid")
    queue.complete(queue.claim("w1"))
    records = wal_records(machina_root)
    assert [r["t"] for r in records] == ["ENQ", "DEDUP", "CLAIM", "DONE"]
    assert records[0]["name"] == name and records[0]["rid"] == "rid" and len(records[0]["sha"]) == 64
    assert all("crc" in r for r in records)


def test_crc_detects_a_flipped_bit() -> None:
    line = encode({"t": "ENQ", "ts": 1, "name": "x"}, crc=True).rstrip(b"\n")
    decode(line)
    with pytest.raises(ValueError, match="crc"):
        decode(line.replace(b'"x"', b'"y"'))


def test_registry_names_the_owner(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue()
    queue.enqueue({"goal_id": "g"})
    claim = queue.claim("w1")
    owner = queue.job_status(claim.name).owner
    assert owner["pid"] == os.getpid() and owner["boot_id"] == BOOT_ID and owner["alive"] is True
    assert (machina_root / "state" / "claims" / "w1.json").exists()


def test_a_request_object_can_be_enqueued(make_queue: Any) -> None:
    queue = make_queue()
    result = queue.enqueue(load_request(b'{"goal_id":"g"}', request_id="r"))
    assert result.request_id == "r" and result.name.endswith(".json")


def test_group_commit_shares_fsyncs_between_threads(make_queue: Any) -> None:
    queue = make_queue(fsync=True)
    barrier = threading.Barrier(16)

    def burst() -> None:
        barrier.wait()
        for _ in range(10):
            queue.enqueue({"goal_id": "g"})

    threads = [threading.Thread(target=burst) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.stats().sizes["inbox"] == 160
    # The WAL sync is the commit point (no fsync of the file); concurrent enqueues are combined into batches
    # of one sync request each, and requests arriving during a sync share the next one.
    assert queue._commit.requests <= 160
    assert queue._commit.batches < 160


# --- garbage in the inbox ------------------------------------------------------------------------------


def test_garbage_in_the_inbox_goes_to_failed_and_the_queue_goes_on(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue()
    (qdir(machina_root, "inbox") / "garbage.json").write_bytes(b"\x00\xff not json")
    (qdir(machina_root, "inbox") / "p5000_rq_1000000000000_0000000000.json").write_text('{"no_goal": 1}')
    good = queue.enqueue({"goal_id": "g"}).name
    claim = queue.claim("w1")
    assert claim is not None and claim.name == good  # the bad one with a job name went first, to failed/
    queue.complete(claim)
    assert queue.claim("w1") is None  # the adopted garbage (named at adoption time) went to failed/ too
    failed = queue.list_jobs("failed")
    assert len(failed) == 2
    reasons = sorted(queue.job_status(job.name).results[0]["error"] for job in failed)
    assert reasons[0].startswith("goal_id is required") and reasons[1].startswith("not UTF-8")
    assert queue.stats().counters["failed"] == 2


def test_a_request_dropped_in_by_hand_is_adopted(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue()
    (qdir(machina_root, "inbox") / "my-job.json").write_text('{"goal_id": "goal.BY_HAND.v1"}')
    claim = queue.claim("w1")
    assert claim is not None and claim.request["goal_id"] == "goal.BY_HAND.v1"
    assert claim.name.startswith("p5000_rq_")
    assert any(r.get("adopted") == "my-job.json" for r in wal_records(machina_root))


def test_files_being_written_and_directories_are_left_alone(make_queue: Any, machina_root: Path) -> None:
    inbox = qdir(machina_root, "inbox")
    for name in (".hidden.json", "upload.json.tmp", "upload.part"):
        (inbox / name).write_text("{}")
    (inbox / "subdir").mkdir()
    queue = make_queue()
    assert queue.claim("w1") is None
    assert sorted(os.listdir(inbox)) == sorted([".hidden.json", "upload.json.tmp", "upload.part", "subdir"])


# --- WAL and checkpoint --------------------------------------------------------------------------------


def test_torn_wal_tail_is_cut_logged_and_counted(make_queue: Any, machina_root: Path, caplog: Any) -> None:
    wal = qdir(machina_root, "wal")
    good = encode({"t": "ENQ", "ts": 1, "name": "p5000_rq_1000000000000_0000000000.json"}, crc=True)
    segment = wal / "seg_1000000000000_1_abcdef.wal"
    segment.write_bytes(good + good[: len(good) // 2])
    queue = make_queue()
    report = queue.verify_wal()
    assert not report.ok and report.segments[0].bad_offset == len(good)
    queue.replay()
    assert segment.read_bytes() == good
    assert queue.stats().counters["wal_truncations"] == 1
    assert "torn or corrupt tail" in caplog.text
    assert queue.verify_wal().ok


def test_corrupt_record_cuts_the_rest_of_its_segment(make_queue: Any, machina_root: Path) -> None:
    wal = qdir(machina_root, "wal")
    lines = [encode({"t": "DONE", "ts": n, "file": f"f{n}"}, crc=True) for n in range(3)]
    lines[1] = lines[1].replace(b"f1", b"f7")  # bit rot: crc no longer matches
    segment = wal / "seg_1000000000000_1_abcdef.wal"
    segment.write_bytes(b"".join(lines))
    queue = make_queue()
    queue.replay()
    assert segment.read_bytes() == lines[0]
    assert queue.stats().counters["done"] == 1


def test_dedup_survives_a_restart_through_the_wal(make_queue: Any) -> None:
    first = make_queue().enqueue({"goal_id": "g"}, request_id="keep")
    again = make_queue().enqueue({"goal_id": "g"}, request_id="keep")
    assert again.deduplicated and again.name == first.name


def test_checkpoint_keeps_dedup_and_counters_and_drops_covered_segments(make_queue: Any, machina_root: Path) -> None:
    writer = make_queue()
    first = writer.enqueue({"goal_id": "g"}, request_id="kept")
    writer.close()  # seals its segment
    checkpointer = make_queue()
    assert checkpointer.checkpoint()
    wal = qdir(machina_root, "wal")
    assert list_segments(str(wal)) == []
    data = read_checkpoint(str(wal / "checkpoint.json"))
    assert data["counts"]["ENQ"] == 1 and data["dedup"][0][:2] == ["kept", first.name]
    later = make_queue()
    assert later.enqueue({"goal_id": "g"}, request_id="kept").deduplicated
    assert later.stats().counters["enqueued"] == 1


def test_checkpoint_does_not_drop_a_live_segment(make_queue: Any, machina_root: Path) -> None:
    live = make_queue()
    live.enqueue({"goal_id": "g"})
    assert make_queue().checkpoint()
    assert list_segments(str(qdir(machina_root, "wal"))) == [live._writer.segment]


def test_expired_dedup_entries_leave_the_checkpoint(make_queue: Any, machina_root: Path) -> None:
    clock = FakeClock()
    queue = make_queue(clock=clock, dedup_ttl_ms=1000)
    queue.enqueue({"goal_id": "g"}, request_id="old")
    clock.advance(2)
    queue.checkpoint()
    assert read_checkpoint(str(qdir(machina_root, "wal") / "checkpoint.json"))["dedup"] == []


def test_corrupt_checkpoint_is_set_aside_and_no_job_is_lost(make_queue: Any, machina_root: Path, caplog: Any) -> None:
    writer = make_queue()
    names = {writer.enqueue({"goal_id": "g"}, request_id=f"r{i}").name for i in range(3)}
    writer.close()
    make_queue().checkpoint()
    checkpoint = qdir(machina_root, "wal") / "checkpoint.json"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    assert not make_queue().verify_wal().ok
    queue = make_queue()
    stats = queue.stats()
    assert stats.counters["checkpoints_corrupt"] == 1
    assert "is corrupt" in caplog.text
    assert [p.name for p in qdir(machina_root, "wal").glob("checkpoint.json.corrupt-*")]
    claimed = set()
    while (claim := queue.claim("w1")) is not None:
        claimed.add(claim.name)
        queue.complete(claim)
    assert claimed == names


def test_deleting_the_wal_loses_no_job(make_queue: Any, machina_root: Path) -> None:
    writer = make_queue(fsync=True)
    names = {writer.enqueue({"goal_id": "g"}).name for _ in range(5)}
    shutil.rmtree(qdir(machina_root, "wal"))
    names.add(writer.enqueue({"goal_id": "g"}).name)  # the writer carries on
    writer.close()
    shutil.rmtree(qdir(machina_root, "wal"), ignore_errors=True)
    queue = make_queue()
    claimed = set()
    while (claim := queue.claim("w1")) is not None:
        claimed.add(claim.name)
        queue.complete(claim)
    assert claimed == names
    assert queue.stats().sizes["done"] == 6


def test_wal_disabled_writes_no_wal(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue(wal_enable=False)
    queue.enqueue({"goal_id": "g"}, request_id="x")
    assert queue.enqueue({"goal_id": "g"}, request_id="x").deduplicated
    queue.complete(queue.claim("w1"))
    assert not queue.checkpoint()
    assert os.listdir(qdir(machina_root, "wal")) == []
    assert queue.stats().counters["enqueued"] == 1 and queue.stats().counters["done"] == 1


def test_stale_tmp_files_of_dead_writers_are_removed(make_queue: Any, machina_root: Path) -> None:
    tmp = qdir(machina_root, "tmp")
    (tmp / "999999999_aaaa.tmp").write_text("half a job")
    (tmp / f"{os.getpid()}_bbbb.tmp").write_text("mine, in progress")
    make_queue()
    assert os.listdir(tmp) == [f"{os.getpid()}_bbbb.tmp"]


# --- recovery details ----------------------------------------------------------------------------------


def test_claims_of_a_previous_boot_are_recovered(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue()
    name = queue.enqueue({"goal_id": "g"}).name
    os.rename(qdir(machina_root, "inbox") / name, qdir(machina_root, "processing") / name)
    claims = machina_root / "state" / "claims"
    claims.mkdir(exist_ok=True)
    owner = {
        "worker_id": "w9",
        "pid": 1,
        "boot_id": "another-boot",
        "started_ms": 1,
        "heartbeat_ms": 1,
        "claims": {name: 1},
    }
    (claims / "w9.json").write_bytes(encode(owner, crc=True))
    assert queue.recover() == [name]
    assert queue.job_status(name).attempt == 2


def test_a_claim_nobody_owns_is_recovered_after_the_claim_timeout(make_queue: Any, machina_root: Path) -> None:
    clock = FakeClock(start=time.time())  # the rule compares the file's ctime (real time) with the clock
    queue = make_queue(claim_timeout_ms=1000, clock=clock)
    name = queue.enqueue({"goal_id": "g"}).name
    os.rename(qdir(machina_root, "inbox") / name, qdir(machina_root, "processing") / name)
    assert queue.recover() == []
    clock.advance(1.1)
    assert queue.recover() == [name]


# --- wake-up -------------------------------------------------------------------------------------------


def _enqueue_from_another_process(root: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from machina.queue import FileQueue; print(FileQueue(sys.argv[1]).enqueue({'goal_id':'g'}).name)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True, cwd=CHECKOUT, timeout=60
    )


def _claim_in_thread(queue: FileQueue) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(queue.claim("w1", timeout=30)))
    thread.start()
    return thread, got


def test_a_waiting_worker_is_woken_by_inotify(make_queue: Any, machina_root: Path) -> None:
    queue = make_queue(scan_ms=600_000)  # no rescan in the test's lifetime: only inotify can wake it
    assert queue.claim("w1") is None
    assert queue._inbox.watching
    thread, got = _claim_in_thread(queue)
    name = _enqueue_from_another_process(machina_root).stdout.strip()
    thread.join(timeout=30)
    assert got and got[0] is not None and got[0].name == name


def test_without_inotify_the_rescan_finds_the_job(
    make_queue: Any, machina_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "open_inotify", lambda: None)
    queue = make_queue(scan_ms=50)
    assert queue.claim("w1") is None
    assert not queue._inbox.watching
    thread, got = _claim_in_thread(queue)
    name = _enqueue_from_another_process(machina_root).stdout.strip()
    thread.join(timeout=30)
    assert got and got[0] is not None and got[0].name == name


def test_a_forked_child_does_not_keep_the_parents_claims_alive(make_queue: Any, machina_root: Path) -> None:
    """A work horse forked by a worker outliving it must not hide the worker's death."""
    parent_code = (
        "import os, sys, time\n"
        "from machina.queue import FileQueue\n"
        "q = FileQueue(sys.argv[1]); q.claim('horse-owner')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    null = os.open(os.devnull, os.O_RDWR); os.dup2(null, 1); os.dup2(null, 2)\n"
        "    time.sleep(30); os._exit(0)\n"
        "print(pid, flush=True)\n"
        "os._exit(0)\n"  # the worker dies; its forked child lives on
    )
    queue = make_queue()
    name = queue.enqueue({"goal_id": "g"}).name
    proc = subprocess.run(
        [sys.executable, "-c", parent_code, str(machina_root)], capture_output=True, text=True, timeout=60, cwd=CHECKOUT
    )
    child = int(proc.stdout.strip())
    try:
        os.kill(child, 0)  # the child is still alive, holding its copies of the worker's descriptors
        assert queue.recover() == [name]
    finally:
        os.kill(child, 9)


def test_a_busy_workers_index_does_not_grow_with_jobs_taken_by_others(make_queue: Any) -> None:
    busy = make_queue()
    assert busy.claim("busy") is None  # starts its watcher, then "runs a long job"
    producer, other = make_queue(), make_queue()
    for _ in range(1500):
        producer.enqueue({"goal_id": "g"})
        other.complete(other.claim("other", timeout=10))
    deadline = time.monotonic() + 10
    while busy._inbox._present and time.monotonic() < deadline:
        time.sleep(0.05)  # let the watcher read the last events
    assert len(busy._inbox._heap) <= 1024 + 2 * len(busy._inbox._present)


def test_maintenance_thread_checkpoints_and_promotes_retries(make_queue: Any, machina_root: Path) -> None:
    """What machina-enqueued runs: no claims of its own, yet checkpoints happen and due retries move."""
    worker = make_queue(retry_min_ms=50, retry_max_ms=50)
    name = worker.enqueue({"goal_id": "g"}).name
    worker.fail(worker.claim("w1"), "later")
    daemon = make_queue(checkpoint_ms=20)
    daemon.start_maintenance()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = daemon.job_status(name)
        if status.state == "inbox" and (qdir(machina_root, "wal") / "checkpoint.json").exists():
            break
        time.sleep(0.05)
    assert daemon.job_status(name).state == "inbox"
    assert read_checkpoint(str(qdir(machina_root, "wal") / "checkpoint.json"))["counts"]["SCHED"] == 1


def test_a_failing_checkpoint_does_not_fail_a_claim(make_queue: Any, machina_root: Path, caplog: Any) -> None:
    queue = make_queue(checkpoint_ms=1)
    queue.enqueue({"goal_id": "g"})
    (qdir(machina_root, "wal") / "checkpoint.json").mkdir()  # write_atomic's rename onto it fails
    time.sleep(0.01)
    assert queue.claim("w1") is not None
    assert "could not checkpoint the WAL" in caplog.text


def test_a_closed_queue_closes_nothing_in_a_later_forked_child(make_queue: Any) -> None:
    """A closed queue that is still referenced stayed on the at-fork list, and its watcher's old descriptor
    numbers were closed again in every later child: with a preexec_fn that is before the exec, so a
    subprocess lost its own pipe ends (EBADF from Popen; found as a CI failure in tests/unit/test_proc.py)."""
    queue = make_queue(scan_ms=600_000)
    assert queue.claim("w1") is None and queue._inbox.watching
    queue.close()  # still referenced (by the fixture), as a caller may keep it
    held = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(16)]  # the numbers it let go of
    try:
        pid = os.fork()
        if pid == 0:  # the child: are the descriptors this process holds still there?
            code = 0
            for fd in held:
                try:
                    os.fstat(fd)
                except OSError:
                    code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a descriptor of the child was closed at fork"
    finally:
        for fd in held:
            os.close(fd)
    done = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, preexec_fn=lambda: None)
    assert done.stdout == b"1\n"


def test_closing_the_queue_in_a_forked_child_leaves_the_parents_watcher_running(
    make_queue: Any, machina_root: Path
) -> None:
    queue = make_queue(scan_ms=600_000)
    assert queue.claim("w1") is None and queue._inbox.watching
    pid = os.fork()
    if pid == 0:  # the child: close the inherited queue, as careless code might, and leave
        try:
            queue.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert queue._inbox.watching
    thread, got = _claim_in_thread(queue)
    name = _enqueue_from_another_process(machina_root).stdout.strip()
    thread.join(timeout=30)
    assert got and got[0] is not None and got[0].name == name

"""A job that kills its job child — segfault, out of memory, kill -9, a hang past the job timeout, a broken
answer, an exit — leaves the worker running: the attempt fails as retryable, the queue retries the job and
dead-letters it once its attempts (2 here) are spent, and the next job runs normally."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from workerkit import NOOP, Suite, Worker, pid_alive, wait_for

from machina.worker.orphans import child_pids


@pytest.fixture
def faulty(suite: Suite) -> Iterator[Worker]:
    worker = suite.start_worker(faulty=True, MACHINA_JOB_TIMEOUT_MS="1500", MACHINA_WORKER_CONCURRENCY="1")
    yield worker
    assert worker.stop() == 0, worker.text()


def assert_dead_lettered(suite: Suite, name: str, status: str, reason: str) -> list[dict]:
    job = suite.wait_state(name, "dlq")
    envelopes = job.results
    assert [e["attempt"] for e in envelopes] == [1, 2]
    assert [e["status"] for e in envelopes] == ["retry", "dlq"]
    for envelope in envelopes:
        assert envelope["result"]["status"] == status, envelope
        assert reason in envelope["result"]["reason"], envelope
        assert envelope["result"]["retryable"] is True
    return envelopes


def assert_lives_on(suite: Suite, worker: Worker) -> None:
    name = suite.enqueue(NOOP)
    job = suite.wait_state(name, "done")
    assert job.results[0]["result"]["status"] == "done"
    assert worker.proc.poll() is None


@pytest.mark.parametrize(
    ("fault", "status", "reason"),
    [
        ("segv", "crashed", "killed_by_SIGSEGV"),
        ("exit", "crashed", "exit_status_3"),
        ("garbage", "crashed", "child_misbehaved"),
    ],
)
def test_a_child_that_dies_or_misbehaves_costs_an_attempt_not_the_worker(
    suite: Suite, faulty: Worker, fault: str, status: str, reason: str
) -> None:
    name = suite.enqueue(NOOP, fault=fault)
    assert_dead_lettered(suite, name, status, reason)
    assert_lives_on(suite, faulty)


def test_a_child_out_of_memory_costs_an_attempt_not_the_worker(suite: Suite, faulty: Worker) -> None:
    name = suite.enqueue(NOOP, fault="oom")
    envelopes = assert_dead_lettered(suite, name, "crashed", "")
    # Python raises MemoryError in the child, which reports it and exits; were it killed instead (the
    # kernel's OOM killer, an abort in C code), the reason would name the signal.
    for envelope in envelopes:
        result = envelope["result"]
        assert result["reason"] == "child_exception" or result["reason"].startswith("killed_by_"), result
        if result["reason"] == "child_exception":
            assert "MemoryError" in result["error"]
    assert_lives_on(suite, faulty)


def test_a_child_killed_from_outside_costs_an_attempt_not_the_worker(suite: Suite, faulty: Worker) -> None:
    name = suite.enqueue(NOOP, fault="pause")
    for attempt in (1, 2):
        (pid,) = suite.fault_pids(name, attempt)
        os.kill(pid, signal.SIGKILL)
    envelopes = assert_dead_lettered(suite, name, "crashed", "killed_by_SIGKILL")
    assert envelopes[0]["result"]["child_pid"] != envelopes[1]["result"]["child_pid"]
    assert_lives_on(suite, faulty)


def test_a_hung_job_is_killed_at_the_timeout_with_everything_it_started(suite: Suite, faulty: Worker) -> None:
    name = suite.enqueue(NOOP, fault="hang")
    started = [suite.fault_pids(name, attempt) for attempt in (1, 2)]
    envelopes = assert_dead_lettered(suite, name, "timed_out", "job_timeout")
    assert "MACHINA_JOB_TIMEOUT_MS=1500" in envelopes[0]["result"]["error"]
    for child, same_group, own_session in started:
        # The child's process group is killed, and the sleeper in a session of its own is killed as an
        # orphan the worker (a child subreaper) inherited.
        for pid in (child, same_group, own_session):
            wait_for(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to be gone")
    assert_lives_on(suite, faulty)


def test_d15_a_retired_child_leaves_nothing_behind(suite: Suite) -> None:
    worker = suite.start_worker(faulty=True, MACHINA_WORKER_CHILD_MAX_JOBS="1", MACHINA_WORKER_CONCURRENCY="1")
    name = suite.enqueue(NOOP, fault="leave")
    (child, same_group, own_session) = suite.fault_pids(name, 1)
    job = suite.wait_state(name, "done")
    assert [(e["attempt"], e["status"]) for e in job.results] == [(1, "done")]
    # The child is retired after its one job; what it started dies with it, in its group or not.
    for pid in (child, same_group, own_session):
        wait_for(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to be gone")
    assert worker.stop() == 0, worker.text()


def test_the_log_names_the_job_and_the_cause(suite: Suite, faulty: Worker) -> None:
    name = suite.enqueue(NOOP, fault="segv")
    suite.wait_state(name, "dlq")
    text = faulty.text()
    assert "died mid-job (killed_by_SIGSEGV)" in text
    assert f"job={name}" in text


def test_idle_children_killed_cost_no_job_an_attempt(suite: Suite) -> None:
    worker = suite.start_worker(MACHINA_WORKER_CONCURRENCY="1")
    children = wait_for(lambda: child_pids(worker.pid) if len(child_pids(worker.pid)) >= 2 else None)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    name = suite.enqueue(NOOP)
    job = suite.wait_state(name, "done")
    assert [(e["attempt"], e["status"]) for e in job.results] == [(1, "done")]
    assert job.results[0]["result"]["child_pid"] not in children
    assert worker.stop() == 0

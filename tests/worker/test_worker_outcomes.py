"""How each way a run ends reaches the queue, with a real worker and machina-toolhost: done, noop and
asked complete (their status recorded); a request that cannot run fails permanently; an unreachable
toolhost is a retryable failure that also holds the worker back from claiming for a while."""

from __future__ import annotations

from workerkit import ERROR_SCAN, NOOP, Suite


def test_each_ending_reaches_the_queue(suite: Suite) -> None:
    worker = suite.start_worker()
    done = suite.enqueue(ERROR_SCAN)
    # Nothing on the menu can write the report once it is blocked: the selector ends the run noop.
    noop = suite.enqueue(dict(ERROR_SCAN, _capabilities={"blocked_tools": ["AID.REPORT_*"]}, request_id="noop"))
    unknown = suite.enqueue({"goal_id": "goal.NO_SUCH.v1"})
    bad_inputs = suite.enqueue({"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": 7}})

    result = suite.wait_state(done, "done").results[0]["result"]
    assert result["status"] == "done" and set(result["outputs"]) == {"AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"}

    envelope = suite.wait_state(noop, "done").results[0]
    assert envelope["status"] == "done" and envelope["result"]["status"] == "noop"

    for name, reason in ((unknown, "unknown_goal"), (bad_inputs, "invalid_inputs")):
        (envelope,) = suite.wait_state(name, "failed").results  # one attempt: retrying cannot help
        assert envelope["result"]["status"] == "failed" and envelope["result"]["reason"] == reason
        assert envelope["error"].startswith(f"failed: {reason}")
    assert worker.stop() == 0


def test_an_unreachable_toolhost_is_retried_and_pauses_claiming(suite: Suite) -> None:
    worker = suite.start_worker(MACHINA_MAX_ATTEMPTS="10")  # room for the toolhost to restart, however slow
    suite.wait_state(suite.enqueue(dict(NOOP, request_id="warm-up")), "done")
    assert suite.toolhost is not None
    suite.toolhost.kill()  # the toolhost crashes: its socket is left behind, refusing connections
    suite.toolhost.wait(10)
    name = suite.enqueue(NOOP)
    first = suite.wait_state(name, "retry", timeout=30).results[0]
    assert first["result"]["reason"] == "toolhost_unavailable" and first["result"]["retryable"] is True
    suite.start_toolhost()
    job = suite.wait_state(name, "done", timeout=60)
    assert job.results[-1]["result"]["status"] == "done"
    assert "claiming nothing for" in worker.text()
    assert worker.stop() == 0

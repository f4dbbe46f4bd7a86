"""The queue contract test mixin (huey's test_storage idea): every BaseQueue implementation passes it.

A backend's test class inherits :class:`QueueContract` and provides one fixture, ``make_queue``: a factory
``make_queue(clock=None, **config_overrides) -> BaseQueue`` whose queues all share one store (so a second
queue is "another process" on the same queue) and are closed at teardown.  Closing a queue with a claim
outstanding stands for that worker dying.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

from machina.clock import FakeClock
from machina.queue import (
    ClaimLost,
    DedupConflict,
    InvalidRequest,
    JobNotFound,
    QueueError,
    WorkerIdInUse,
)
from machina.queue.names import fnv1a32
from machina.queue.request import validate_request

LEASE = {"aid": "AID.SHELL.EXEC.v1", "inputs_digest": "ab" * 32, "token": "mlease_0123abcd_secretsecret"}
NAME_RE = re.compile(r"p(\d{4})_rq_(\d{13})_([0-9a-f]{10})(_rid[0-9a-f]{8})?\.json")


def req(goal: str = "goal.TEST.v1", **extra: Any) -> dict[str, Any]:
    return {"goal_id": goal, **extra}


class QueueContract:
    """Tests through the BaseQueue API only."""

    # --- enqueue -------------------------------------------------------------------------------------

    def test_enqueue_names_the_job_as_designed(self, make_queue: Any) -> None:
        q = make_queue()
        plain = q.enqueue(req())
        assert NAME_RE.fullmatch(plain.name) and plain.name.startswith("p5000_")
        assert plain.request_id is None and not plain.deduplicated
        with_rid = q.enqueue(req(), request_id="client-id-1", priority=42)
        assert with_rid.name.startswith("p0042_")
        assert with_rid.name.endswith(f"_rid{fnv1a32('client-id-1'):08x}.json")
        assert with_rid.as_response() == {"ok": True, "queued": with_rid.name, "request_id": "client-id-1"}

    def test_enqueued_job_is_in_the_inbox(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req(inputs={"x": 1})).name
        status = q.job_status(name, with_request=True)
        assert status.state == "inbox" and status.attempt == 1 and status.results == []
        assert status.request == {"goal_id": "goal.TEST.v1", "inputs": {"x": 1}}
        assert [j.name for j in q.list_jobs("inbox")] == [name]
        assert q.stats().sizes["inbox"] == 1

    @pytest.mark.parametrize(
        ("request_body", "reason"),
        [
            ([], "expected a JSON object"),
            ({}, "goal_id is required"),
            ({"goal_id": "../../etc"}, "goal_id must be"),
            ({"goal_id": 7}, "goal_id must be"),
            ({"goal_id": "g", "_system_prompt": "x"}, "reserved"),
            ({"goal_id": "g", "_meta": {}}, "reserved"),
            ({"goal_id": "g", "_queue": {"priority": 10000}}, "_queue.priority"),
            ({"goal_id": "g", "_queue": {"turbo": True}}, "unknown key"),
            ({"goal_id": "g", "_queue": {"max_attempts": 0}}, "_queue.max_attempts"),
            ({"goal_id": "g", "control_mode": "YOLO"}, "control_mode"),
            ({"goal_id": "g", "inputs": []}, "inputs must be an object"),
            ({"goal_id": "g", "_capabilities": {"allowed_tools": ["AID.*.X"]}}, "tool pattern"),
            ({"goal_id": "g", "request_id": "has space"}, "request_id"),
            ({"goal_id": "g", "_leases": {}}, "_leases must be a list"),
            ({"goal_id": "g", "_leases": [{"aid": "AID.X.v1"}]}, "exactly aid, inputs_digest and token"),
            (
                {"goal_id": "g", "_leases": [{"aid": "AID.X.v1", "inputs_digest": "x", "token": "mlease_a_b"}]},
                "SHA-256",
            ),
        ],
    )
    def test_invalid_requests_are_refused(self, make_queue: Any, request_body: Any, reason: str) -> None:
        q = make_queue()
        with pytest.raises(InvalidRequest, match=re.escape(reason)):
            q.enqueue(request_body)
        assert q.stats().sizes["inbox"] == 0

    def test_request_id_twice_with_different_values_is_refused(self, make_queue: Any) -> None:
        with pytest.raises(InvalidRequest, match="request_id given twice"):
            make_queue().enqueue(req(request_id="a"), request_id="b")

    def test_bad_priority_argument_is_refused(self, make_queue: Any) -> None:
        with pytest.raises(InvalidRequest, match="priority"):
            make_queue().enqueue(req(), priority=10_000)

    # --- dedup ---------------------------------------------------------------------------------------

    def test_same_request_id_same_body_gives_the_first_name(self, make_queue: Any) -> None:
        q = make_queue()
        first = q.enqueue(req(inputs={"a": 1}), request_id="r1")
        again = q.enqueue(req(inputs={"a": 1}), request_id="r1")
        assert again.deduplicated and again.name == first.name
        assert again.as_response()["deduplicated"] is True
        assert q.stats().sizes["inbox"] == 1
        assert q.stats().counters["deduplicated"] == 1

    def test_key_order_does_not_make_a_different_body(self, make_queue: Any) -> None:
        q = make_queue()
        first = q.enqueue({"goal_id": "g", "inputs": {"a": 1, "b": 2}, "request_id": "r"})
        again = q.enqueue({"inputs": {"b": 2, "a": 1}, "request_id": "r", "goal_id": "g"})
        assert again.deduplicated and again.name == first.name

    def test_same_request_id_different_body_is_a_conflict(self, make_queue: Any) -> None:
        q = make_queue()
        first = q.enqueue(req(inputs={"a": 1}), request_id="r1")
        with pytest.raises(DedupConflict) as caught:
            q.enqueue(req(inputs={"a": 2}), request_id="r1")
        assert caught.value.first_name == first.name
        assert q.stats().sizes["inbox"] == 1

    def test_dedup_expires_after_its_ttl(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock, dedup_ttl_ms=1000)
        first = q.enqueue(req(), request_id="r1")
        clock.advance(1.0015)
        second = q.enqueue(req(), request_id="r1")
        assert not second.deduplicated and second.name != first.name

    def test_dedup_ttl_zero_turns_dedup_off(self, make_queue: Any) -> None:
        q = make_queue(dedup_ttl_ms=0)
        assert q.enqueue(req(), request_id="r1").name != q.enqueue(req(), request_id="r1").name

    def test_dedup_is_seen_by_another_queue_on_the_same_store(self, make_queue: Any) -> None:
        first = make_queue().enqueue(req(), request_id="shared")
        again = make_queue().enqueue(req(), request_id="shared")
        assert again.deduplicated and again.name == first.name

    def test_concurrent_copies_of_one_request_make_one_job(self, make_queue: Any) -> None:
        q = make_queue()
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(q.enqueue(req(), request_id="once"))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({r.name for r in results}) == 1
        assert sum(not r.deduplicated for r in results) == 1
        assert q.stats().sizes["inbox"] == 1

    # --- enqueue_batch (machina-enqueued's path) ----------------------------------------------------------

    def test_a_batch_answers_each_request_in_order(self, make_queue: Any) -> None:
        q = make_queue()
        first = q.enqueue(req(inputs={"n": 0}), request_id="seen-before")
        batch = [
            validate_request(req(inputs={"n": 1})),
            validate_request(req(inputs={"n": 2}, _queue={"priority": 7})),
            validate_request(req(inputs={"n": 0}), request_id="seen-before"),
            validate_request(req(inputs={"n": 99}), request_id="seen-before"),
        ]
        plain, urgent, repeat, conflict = q.enqueue_batch(batch)
        assert NAME_RE.fullmatch(plain.name) and plain.name.startswith("p5000_") and not plain.deduplicated
        assert urgent.name.startswith("p0007_")
        assert repeat.deduplicated and repeat.name == first.name
        assert isinstance(conflict, DedupConflict), "a conflict is that request's answer, not the batch's"
        assert q.job_status(plain.name, with_request=True).request == {"goal_id": "goal.TEST.v1", "inputs": {"n": 1}}
        assert q.stats().sizes["inbox"] == 3
        assert [c.name for c in iter(lambda: q.claim("w"), None)] == [urgent.name, first.name, plain.name]

    def test_copies_of_one_request_in_a_batch_make_one_job(self, make_queue: Any) -> None:
        q = make_queue()
        copies = q.enqueue_batch([validate_request(req(), request_id="twice") for _ in range(3)])
        assert len({r.name for r in copies}) == 1
        assert [r.deduplicated for r in copies] == [False, True, True]
        assert q.stats().sizes["inbox"] == 1

    def test_an_empty_batch_is_nothing(self, make_queue: Any) -> None:
        q = make_queue()
        assert q.enqueue_batch([]) == []
        assert q.stats().sizes["inbox"] == 0

    # --- claim order ---------------------------------------------------------------------------------

    def test_claims_lower_priority_number_first_then_fifo(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock)
        names = {}
        for label, prio in [("a", 5000), ("b", 10), ("c", 5000), ("d", 10), ("e", 9999), ("f", 0)]:
            names[q.enqueue(req(), priority=prio).name] = label
            if label in "bd":
                clock.advance(0.001)
        order = []
        while (claim := q.claim("w1")) is not None:
            order.append(names[claim.name])
            q.complete(claim)
        assert order == ["f", "b", "d", "a", "c", "e"]

    def test_queue_settings_priority_is_used(self, make_queue: Any) -> None:
        q = make_queue()
        low = q.enqueue(req(_queue={"priority": 7000})).name
        high = q.enqueue(req(_queue={"priority": 3})).name
        assert high.startswith("p0003_") and low.startswith("p7000_")
        assert q.claim("w1").name == high

    def test_claim_returns_the_parsed_request(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req(inputs={"k": "v"}, _queue={"max_attempts": 3}), request_id="rid-9").name
        claim = q.claim("w1")
        assert claim.name == name and claim.file == name and claim.attempt == 1
        assert claim.request["inputs"] == {"k": "v"} and claim.request["request_id"] == "rid-9"
        assert claim.request_id == "rid-9" and claim.max_attempts == 3 and claim.worker_id == "w1"
        assert q.job_status(name).state == "processing"
        assert q.job_status(name).owner["worker_id"] == "w1"

    def test_claim_on_an_empty_queue_returns_none(self, make_queue: Any) -> None:
        assert make_queue().claim("w1") is None

    def test_claim_waits_for_a_job(self, make_queue: Any) -> None:
        q = make_queue()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(q.claim("w1", timeout=30)))
        waiter.start()
        name = make_queue().enqueue(req()).name
        waiter.join(timeout=30)
        assert got and got[0] is not None and got[0].name == name

    def test_each_job_is_claimed_once_by_concurrent_workers(self, make_queue: Any) -> None:
        q = make_queue()
        names = {q.enqueue(req(), request_id=f"j{i}").name for i in range(40)}
        seen: list[str] = []
        lock = threading.Lock()

        def work(worker: str) -> None:
            mine = make_queue()
            while (claim := mine.claim(worker)) is not None:
                with lock:
                    seen.append(claim.name)
                mine.complete(claim, {"by": worker})

        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seen) == sorted(names)
        assert q.stats().sizes["done"] == 40

    def test_a_live_worker_id_cannot_be_used_twice(self, make_queue: Any) -> None:
        make_queue().enqueue(req())
        make_queue().claim("same")
        with pytest.raises(WorkerIdInUse):
            make_queue().claim("same")

    def test_bad_worker_id_is_refused(self, make_queue: Any) -> None:
        with pytest.raises(QueueError, match="worker id"):
            make_queue().claim("../evil")

    # --- results -------------------------------------------------------------------------------------

    def test_complete_moves_to_done_with_the_result(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        claim = q.claim("w1")
        q.complete(claim, {"answer": 42})
        status = q.job_status(name)
        assert status.state == "done" and status.attempt == 1
        assert [(r["attempt"], r["status"], r["result"]) for r in status.results] == [(1, "done", {"answer": 42})]
        assert q.stats().counters["done"] == 1

    def test_a_result_that_is_not_json_is_refused_and_the_claim_kept(self, make_queue: Any) -> None:
        q = make_queue()
        q.enqueue(req())
        claim = q.claim("w1")
        with pytest.raises(QueueError, match="not JSON"):
            q.complete(claim, {"x": object()})
        assert q.job_status(claim.name).state == "processing"
        q.complete(claim, "fine")

    def test_fail_schedules_a_retry_with_backoff(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock, retry_min_ms=1000, retry_max_ms=8000)
        name = q.enqueue(req()).name
        claim = q.claim("w1")
        assert q.fail(claim, "tool timed out") == "retry"
        status = q.job_status(name)
        assert status.state == "retry" and status.attempt == 2
        now_ms = int(clock.time() * 1000)
        assert now_ms + 1000 <= status.due_ms <= now_ms + 8000
        assert status.results[0]["error"] == "tool timed out" and status.results[0]["status"] == "retry"
        assert q.claim("w1") is None  # not due yet
        clock.advance((status.due_ms - now_ms + 0.5) / 1000)  # mid-millisecond: no float rounding
        again = q.claim("w1")
        assert again is not None and again.name == name and again.attempt == 2
        q.complete(again)
        assert [r["status"] for r in q.job_status(name).results] == ["retry", "done"]

    def test_attempts_exhausted_go_to_dlq(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock, max_attempts=2, retry_min_ms=10, retry_max_ms=10)
        name = q.enqueue(req()).name
        assert q.fail(q.claim("w1"), "one") == "retry"
        clock.advance(1)
        assert q.fail(q.claim("w1"), "two") == "dlq"
        assert q.job_status(name).state == "dlq"
        assert q.stats().counters["dead_lettered"] == 1

    def test_per_job_queue_settings_survive_retries(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock, max_attempts=10, retry_min_ms=1000, retry_max_ms=60000)
        name = q.enqueue(req(_queue={"max_attempts": 3, "retry_min_ms": 50, "retry_max_ms": 100})).name
        for attempt in (1, 2):
            claim = q.claim("w1")
            assert claim.attempt == attempt and claim.max_attempts == 3
            assert (claim.retry_min_ms, claim.retry_max_ms) == (50, 100)
            q.fail(claim, "again")
            assert q.job_status(name).due_ms - int(clock.time() * 1000) <= 100
            clock.advance(0.1005)
        assert q.fail(q.claim("w1"), "last") == "dlq"

    def test_permanent_failure_goes_to_failed(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        assert q.fail(q.claim("w1"), "goal unknown", retryable=False) == "failed"
        status = q.job_status(name)
        assert status.state == "failed" and status.results[0]["error"] == "goal unknown"

    def test_release_gives_the_job_back_without_an_attempt(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        q.release(q.claim("w1"))
        status = q.job_status(name)
        assert status.state == "inbox" and status.attempt == 1
        assert q.claim("w1").attempt == 1

    def test_heartbeat_keeps_a_claim_and_reports_a_lost_one(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock, claim_timeout_ms=5000)
        q.enqueue(req())
        claim = q.claim("w1")
        for _ in range(3):
            clock.advance(4)
            q.heartbeat(claim)
            assert make_queue(clock=clock, claim_timeout_ms=5000).recover() == []
        clock.advance(6)
        assert make_queue(clock=clock, claim_timeout_ms=5000).recover() == [claim.name]
        with pytest.raises(ClaimLost):
            q.heartbeat(claim)

    # --- recovery ------------------------------------------------------------------------------------

    def test_restarted_worker_recovers_its_orphans(self, make_queue: Any) -> None:
        first = make_queue()
        name = first.enqueue(req()).name
        assert first.claim("w7").name == name
        first.close()  # the worker died with the claim
        restarted = make_queue()
        assert restarted.recover("w7") == [name]
        status = restarted.job_status(name)
        assert status.state == "inbox" and status.attempt == 2
        assert status.results[0]["status"] == "recovered"
        assert restarted.claim("w7").attempt == 2
        assert restarted.stats().counters["recovered"] == 1

    def test_any_process_recovers_a_dead_workers_claims(self, make_queue: Any) -> None:
        dead = make_queue()
        name = dead.enqueue(req()).name
        dead.claim("w1")
        dead.close()
        assert make_queue().recover() == [name]

    def test_a_live_workers_claims_are_left_alone(self, make_queue: Any) -> None:
        live = make_queue()
        live.enqueue(req())
        claim = live.claim("w1")
        assert make_queue().recover() == []
        live.complete(claim)

    def test_complete_after_recovery_is_claim_lost_and_done_once(self, make_queue: Any) -> None:
        clock = FakeClock()
        slow = make_queue(clock=clock, claim_timeout_ms=1000)
        name = slow.enqueue(req()).name
        stale = slow.claim("slow")
        clock.advance(2)
        other = make_queue(clock=clock, claim_timeout_ms=1000)
        assert other.recover() == [name]
        fresh = other.claim("fast")
        with pytest.raises(ClaimLost):
            slow.complete(stale, "late")
        other.complete(fresh, "on time")
        assert [j.name for j in other.list_jobs("done")] == [name]

    def test_a_job_that_keeps_killing_its_worker_ends_in_dlq(self, make_queue: Any) -> None:
        name = make_queue().enqueue(req(_queue={"max_attempts": 2})).name
        for _ in range(2):
            doomed = make_queue()
            doomed.claim("w1")
            doomed.close()
            make_queue().recover()
        assert make_queue().job_status(name).state == "dlq"

    # --- operators -----------------------------------------------------------------------------------

    def test_requeue_from_dlq_gives_one_more_attempt(self, make_queue: Any) -> None:
        q = make_queue(max_attempts=1)
        name = q.enqueue(req()).name
        assert q.fail(q.claim("w1"), "nope") == "dlq"
        q.requeue(name)
        claim = q.claim("w1")
        assert claim.name == name and claim.attempt == 2
        assert q.fail(claim, "still no") == "dlq"

    def test_requeue_of_a_waiting_job_is_refused(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        with pytest.raises(JobNotFound):
            q.requeue(name)
        with pytest.raises(JobNotFound):
            q.requeue("p5000_rq_1700000000000_0000000000.json")

    def test_requeue_of_a_retry_runs_it_now(self, make_queue: Any) -> None:
        q = make_queue(retry_min_ms=3_600_000, retry_max_ms=3_600_000)
        name = q.enqueue(req()).name
        q.fail(q.claim("w1"), "later")
        assert q.claim("w1") is None
        q.requeue(name)
        assert q.claim("w1").attempt == 2

    # --- approvals (asked/) ---------------------------------------------------------------------------

    def test_an_asking_job_waits_in_asked_until_approved_with_its_leases(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req(inputs={"x": 1}), request_id="ask-1").name
        asked = {"status": "asked", "approvals": [{"aid": "AID.SHELL.EXEC.v1", "status": "asked"}]}
        q.ask(q.claim("w1"), asked)
        status = q.job_status(name)
        assert status.state == "asked" and status.results[0]["status"] == "asked"
        assert status.results[0]["result"] == asked
        assert [j.name for j in q.list_jobs("asked")] == [name]
        assert q.claim("w1") is None, "an asked job is not claimed again by itself"
        assert q.approve(name, [LEASE]).startswith(name[: -len(".json")])
        claim = q.claim("w1")
        assert claim.name == name and claim.attempt == 2
        assert claim.request == {
            "goal_id": "goal.TEST.v1",
            "inputs": {"x": 1},
            "request_id": "ask-1",
            "_leases": [LEASE],
        }
        shown = q.job_status(name, with_request=True).request
        assert shown["_leases"] == [{"aid": LEASE["aid"], "inputs_digest": LEASE["inputs_digest"]}]
        assert LEASE["token"] not in repr(q.job_status(name, with_request=True))
        q.complete(claim)
        assert q.stats().counters["approved"] == 1
        again = q.enqueue(req(inputs={"x": 1}), request_id="ask-1")
        assert again.deduplicated and again.name == name, "the approval did not change the request's dedup entry"

    def test_a_second_approval_replaces_the_leases(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req(_leases=[LEASE])).name
        q.ask(q.claim("w1"), {"status": "asked"})
        other = dict(LEASE, token="mlease_other_secret")
        q.approve(name, [other])
        assert q.claim("w1").request["_leases"] == [other]

    def test_approve_refuses_a_job_not_in_asked_and_bad_leases(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        with pytest.raises(JobNotFound, match="only jobs in asked/"):
            q.approve(name, [LEASE])
        with pytest.raises(JobNotFound):
            q.approve("p5000_rq_1700000000000_0000000000.json", [LEASE])
        q.ask(q.claim("w1"), {"status": "asked"})
        with pytest.raises(InvalidRequest, match="token must be a lease token"):
            q.approve(name, [dict(LEASE, token="not-a-token")])
        assert q.job_status(name).state == "asked", "a refused approval leaves the job where it was"

    def test_asked_jobs_can_be_purged(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        q.ask(q.claim("w1"), {"status": "asked"})
        assert q.purge("asked", older_than_ms=0) == 1
        assert q.job_status(name) is None

    def test_purge_removes_finished_jobs_and_results(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        waiting = q.enqueue(req()).name
        q.complete(q.claim("w1"))
        assert q.purge("done", older_than_ms=3_600_000) == 0
        assert q.purge("done", older_than_ms=0) == 1
        assert q.job_status(name) is None
        assert q.job_status(waiting).state == "inbox"
        with pytest.raises(QueueError):
            q.purge("inbox", older_than_ms=0)

    def test_unknown_and_malformed_names_have_no_status(self, make_queue: Any) -> None:
        q = make_queue()
        assert q.job_status("p5000_rq_1700000000000_0000000000.json") is None
        assert q.job_status("../../etc/passwd") is None
        assert q.job_status("") is None

    def test_name_without_json_suffix_is_accepted(self, make_queue: Any) -> None:
        q = make_queue()
        name = q.enqueue(req()).name
        assert q.job_status(name[: -len(".json")]).name == name

    def test_stats_counts_every_state(self, make_queue: Any) -> None:
        clock = FakeClock()
        q = make_queue(clock=clock)
        for _ in range(5):
            q.enqueue(req())
        q.complete(q.claim("w1"))
        q.fail(q.claim("w1"), "x")
        q.fail(q.claim("w1"), "x", retryable=False)
        q.ask(q.claim("w1"), {"status": "asked"})
        q.claim("w1")
        stats = q.stats()
        sizes = {"inbox": 0, "processing": 1, "retry": 1, "asked": 1, "done": 1, "failed": 1, "dlq": 0}
        assert stats.sizes == sizes
        assert stats.counters["enqueued"] == 5 and stats.counters["claimed"] == 5 and stats.counters["asked"] == 1
        assert stats.as_dict()["sizes"]["done"] == 1

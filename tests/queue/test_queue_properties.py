"""Property tests (hypothesis) of claim order and retry schedules, on a real FileQueue with a FakeClock."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machina.clock import FakeClock
from machina.queue import FileQueue, QueueConfig
from machina.root import init_root

# Each example creates real files (a few hundred microseconds each on this disk): keep examples modest.
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def fresh_queue(clock: FakeClock, **config: object) -> Iterator[FileQueue]:
    with tempfile.TemporaryDirectory() as root:
        init_root(root)
        queue = FileQueue(root, QueueConfig(**config), clock=clock, rng=random.Random(7))  # type: ignore[arg-type]
        try:
            yield queue
        finally:
            queue.close()


def move_to_ms(clock: FakeClock, ms: int) -> None:
    """Land in the middle of millisecond ``ms`` (float seconds would otherwise round to its neighbour)."""
    clock.advance(max(0.0, (ms + 0.5) / 1000 - clock.time()))


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 10, 5000, 9998, 9999]), st.sampled_from([0.0, 0.0, 0.0005, 0.001, 0.25])),
        min_size=1,
        max_size=25,
    )
)
def test_claim_order_is_priority_then_fifo(jobs: list[tuple[int, float]]) -> None:
    clock = FakeClock()
    with fresh_queue(clock) as queue:
        order = {}
        for index, (priority, pause) in enumerate(jobs):
            order[queue.enqueue({"goal_id": "g"}, priority=priority).name] = (priority, index)
            clock.advance(pause)
        claimed = []
        while (claim := queue.claim("w1")) is not None:
            claimed.append(order[claim.name])
            queue.complete(claim)
        assert claimed == sorted(order.values())


@PROPERTY_SETTINGS
@given(
    max_attempts=st.integers(1, 6),
    retry_min_ms=st.integers(0, 5_000),
    retry_span_ms=st.integers(0, 120_000),
    seed=st.integers(0, 2**32 - 1),
    per_job=st.booleans(),
)
def test_retry_schedule_is_bounded_and_ends_in_dlq(
    max_attempts: int, retry_min_ms: int, retry_span_ms: int, seed: int, per_job: bool
) -> None:
    clock = FakeClock()
    retry_max_ms = retry_min_ms + retry_span_ms
    knobs = {"max_attempts": max_attempts, "retry_min_ms": retry_min_ms, "retry_max_ms": retry_max_ms}
    # Either the defaults or per-job _queue settings (with decoy defaults) drive the schedule.
    config = {"max_attempts": 9, "retry_min_ms": 1, "retry_max_ms": 1} if per_job else dict(knobs)
    body = {"goal_id": "g", "_queue": knobs} if per_job else {"goal_id": "g"}
    with tempfile.TemporaryDirectory() as root:
        init_root(root)
        queue = FileQueue(root, QueueConfig(**config), clock=clock, rng=random.Random(seed))
        try:
            name = queue.enqueue(body).name
            previous_base = 0
            for attempt in range(1, max_attempts + 1):
                claim = queue.claim("w1")
                assert claim is not None and claim.name == name and claim.attempt == attempt
                state = queue.fail(claim, f"failure {attempt}")
                if attempt == max_attempts:
                    assert state == "dlq"
                    break
                assert state == "retry"
                status = queue.job_status(name)
                delay = status.due_ms - int(clock.time() * 1000)
                assert retry_min_ms <= delay <= retry_max_ms
                base = min(retry_max_ms, retry_min_ms * 2 ** (attempt - 1))
                assert delay >= base // 2 and base >= previous_base  # equal jitter keeps half the base
                previous_base = base
                if delay > 0:
                    move_to_ms(clock, status.due_ms - 1)
                    assert queue.claim("w1") is None  # never early
                move_to_ms(clock, status.due_ms)
            assert queue.job_status(name).state == "dlq"
            assert [r["attempt"] for r in queue.job_status(name).results] == list(range(1, max_attempts + 1))
        finally:
            queue.close()

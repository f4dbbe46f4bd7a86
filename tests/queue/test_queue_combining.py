"""machina.queue.combining: concurrent callers are served in batches by one thread, each told its own answer.

The batches are forced, not hoped for: the first batch is held inside ``process`` until the other callers
are waiting, so what the next combiner takes is decided by the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from machina.queue.combining import Combiner, CombinerFailed, _Slot

WAIT_S = 10.0


class _Recorder:
    """``process`` for a Combiner: answers ``item * 10``; the first call waits until ``release`` is set."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.callers: list[str] = []  #: the name of the thread that ran each batch
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.callers.append(threading.current_thread().name)
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(WAIT_S)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("the disk caught fire")
        return [item * 10 for item in items]


def _start(combiner: Combiner[int, int], items: Sequence[int]) -> tuple[list[threading.Thread], dict[int, Any]]:
    answers: dict[int, Any] = {}

    def call(item: int) -> None:
        try:
            answers[item] = combiner.submit(item)
        except BaseException as exc:  # the test asserts which
            answers[item] = exc

    threads = [threading.Thread(target=call, args=(item,), name=f"caller-{item}") for item in items]
    for thread in threads:
        thread.start()
    return threads, answers


def _waiting(combiner: Combiner[int, int]) -> int:
    return len(combiner._waiting)


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "a caller was never answered"


def _behind_a_held_batch(
    process: _Recorder, combiner: Combiner[int, int], others: list[int]
) -> tuple[dict[int, Any], dict[int, Any]]:
    """Caller 0's batch is held in ``process`` until ``others`` all wait; then all run to the end.  Returns
    caller 0's answer and the others' answers (an exception where one was raised)."""
    first, first_answer = _start(combiner, [0])
    assert process.entered.wait(WAIT_S)
    threads, answers = _start(combiner, others)
    _until(lambda: _waiting(combiner) == len(others))
    process.release.set()
    _join(first + threads)
    return first_answer, answers


def test_a_lone_caller_is_its_own_combiner() -> None:
    process = _Recorder()
    process.release.set()
    combiner: Combiner[int, int] = Combiner(process)
    assert [combiner.submit(n) for n in (1, 2, 3)] == [10, 20, 30]
    assert process.batches == [[1], [2], [3]]


def test_callers_waiting_during_a_batch_are_served_together_each_with_its_answer() -> None:
    process = _Recorder()
    combiner: Combiner[int, int] = Combiner(process)
    first_answer, answers = _behind_a_held_batch(process, combiner, list(range(1, 9)))
    assert first_answer == {0: 0}
    assert answers == {n: n * 10 for n in range(1, 9)}
    assert process.batches[0] == [0]
    assert sorted(process.batches[1]) == list(range(1, 9)), "the eight waiters were not served in one batch"


def test_a_batch_is_at_most_max_batch_and_the_rest_is_served_next() -> None:
    process = _Recorder()
    combiner: Combiner[int, int] = Combiner(process, max_batch=3)
    _, answers = _behind_a_held_batch(process, combiner, list(range(1, 8)))
    assert answers == {n: n * 10 for n in range(1, 8)}
    assert [len(batch) for batch in process.batches] == [1, 3, 3, 1]
    for caller, batch in zip(process.callers, process.batches, strict=True):
        assert int(caller.removeprefix("caller-")) in batch, "a combiner ran a batch without its own item"


def test_a_failed_batch_fails_every_caller_in_it_and_the_next_batch_still_runs() -> None:
    process = _Recorder(fail_on=2)
    combiner: Combiner[int, int] = Combiner(process, max_batch=3)
    first_answer, answers = _behind_a_held_batch(process, combiner, [1, 2, 3, 4, 5, 6])
    assert first_answer == {0: 0}
    failed = [n for n, answer in answers.items() if isinstance(answer, BaseException)]
    failing_batch = next(batch for batch in process.batches if 2 in batch)
    assert sorted(failed) == sorted(failing_batch), "exactly the callers of the failed batch are told so"
    combining = [answers[n] for n in failed if type(answers[n]) is RuntimeError]
    assert len(combining) == 1, "the combining thread gets the error itself, the others CombinerFailed"
    assert all(isinstance(answers[n], CombinerFailed | RuntimeError) for n in failed)
    assert all(answers[n] == n * 10 for n in answers if n not in failed)
    assert combiner.submit(9) == 90, "the combiner works after a failed batch"


def test_an_interrupted_caller_leaves_nothing_for_a_later_combiner() -> None:
    calls: list[list[int]] = []

    def process(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if items == [1]:
            raise KeyboardInterrupt
        return list(items)

    combiner: Combiner[int, int] = Combiner(process)
    with pytest.raises(KeyboardInterrupt):
        combiner.submit(1)
    assert combiner.submit(2) == 2
    assert calls == [[1], [2]]
    assert _waiting(combiner) == 0


def test_a_combiner_always_takes_its_own_item_even_behind_a_full_batch() -> None:
    """Which waiter wakes first to combine is the scheduler's choice: set the order up directly."""
    process = _Recorder()
    process.release.set()
    combiner: Combiner[int, int] = Combiner(process, max_batch=2)
    combiner._waiting.extend(_Slot(n) for n in (1, 2, 3))  # three callers ahead, waiting on a busy combiner
    assert combiner.submit(4) == 40
    assert process.batches == [[1, 4]]
    assert [slot.item for slot in combiner._waiting] == [2, 3], "the others wait for the next combiner"


def test_a_promoted_waiter_that_is_interrupted_hands_the_role_on() -> None:
    """The role goes to the first caller still waiting; if that caller is interrupted before it combines,
    the next one gets it, and with nobody left the combiner is free: no caller waits forever."""
    process = _Recorder()
    process.release.set()
    combiner: Combiner[int, int] = Combiner(process)
    first, second = _Slot(1), _Slot(2)
    combiner._waiting.extend([first, second])
    combiner._busy = True
    combiner._hand_over()  # a batch ended: the first in line is woken to combine
    assert first.promoted and first.wake.acquire(blocking=False)
    combiner._withdraw(first)  # ... and interrupted before it did
    assert second.promoted and second.wake.acquire(blocking=False), "the next caller was not woken"
    assert combiner._waiting == [second]
    combiner._withdraw(second)
    assert combiner._waiting == [] and not combiner._busy
    assert combiner.submit(3) == 30 and process.batches == [[3]]


def test_callers_of_a_batch_are_woken_by_their_own_answer_not_by_each_other() -> None:
    """Each waiting caller returns once its item is done, and only the first still waiting is promoted."""
    process = _Recorder()
    combiner: Combiner[int, int] = Combiner(process, max_batch=2)
    first_answer, answers = _behind_a_held_batch(process, combiner, [1, 2, 3, 4, 5])
    assert first_answer == {0: 0} and answers == {n: n * 10 for n in range(1, 6)}
    assert [len(batch) for batch in process.batches] == [1, 2, 2, 1]
    for caller, batch in zip(process.callers, process.batches, strict=True):
        assert int(caller.removeprefix("caller-")) == batch[0], "a batch was run by a caller not first in line"

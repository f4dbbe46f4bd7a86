"""Flat combining: many threads hand their items to one, which does the work for all of them in a batch.

Why: an enqueue makes half a dozen system calls, and each releases the GIL.  With eight threads enqueuing,
every release hands the GIL to another thread, and the futex traffic doubled the CPU of an enqueue (50 ->
117 us on 2 cores).  With a combiner, one thread runs while the others sleep until their answer is ready,
and the batch it takes shares one WAL group commit.

The thread that finds no combiner at work becomes the combiner: it takes every item waiting (up to
``max_batch``, its own always among them), processes them without the lock, hands each waiter its answer,
and leaves; a waiter whose item was not in that batch becomes the next combiner.  A lone caller is its own
combiner, at the cost of one uncontended lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CombinerFailed(RuntimeError):
    """The combining thread failed while it held this caller's item: whether it was done is not known."""


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.done = False


class Combiner(Generic[T, R]):
    """``submit(item)`` returns ``process([..., item, ...])``'s answer for ``item``.  ``process`` must return
    one answer per item, in order, and report an item's own failure as its answer, not by raising: an
    exception it raises is a failure of the whole batch (raised as it is to the combining thread, and as
    :class:`CombinerFailed` to the others)."""

    def __init__(self, process: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 64) -> None:
        self._process = process
        self._max_batch = max_batch
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[_Slot[T, R]] = []
        self._busy = False

    def submit(self, item: T) -> R:
        with self._cond:
            alone = not self._busy and not self._waiting
            if alone:
                self._busy = True
        if alone:
            return self._alone(item)
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._waiting.append(slot)
            try:
                while not slot.done:
                    if self._busy:
                        self._cond.wait()
                        continue
                    self._combine(slot)
            finally:
                if not slot.done and slot in self._waiting:
                    self._waiting.remove(slot)  # this caller is gone: nobody may do its item now
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _alone(self, item: T) -> R:
        """Nobody else waits: the item is processed as a batch of one, without the bookkeeping."""
        try:
            (answer,) = self._process([item])
            return answer
        finally:
            with self._cond:
                self._busy = False
                if self._waiting:
                    self._cond.notify_all()

    def _combine(self, own: _Slot[T, R]) -> None:
        """Called with the lock held; releases it while the batch is processed."""
        batch = self._waiting[: self._max_batch]
        if own not in batch:
            batch[-1] = own  # the combiner's own item is always in its batch: it answers for it, errors too
        taken = {id(slot) for slot in batch}
        self._waiting = [slot for slot in self._waiting if id(slot) not in taken]
        self._busy = True
        self._cond.release()
        try:
            self._run(batch, own)
        finally:
            self._cond.acquire()
            self._busy = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """No thread of the parent exists here, and one may have held the lock at the fork."""
        self._cond = threading.Condition(threading.Lock())
        self._waiting = []
        self._busy = False

    def _run(self, batch: list[_Slot[T, R]], own: _Slot[T, R]) -> None:
        try:
            answers = self._process([slot.item for slot in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"combined {len(batch)} items and got {len(answers)} answers")
        except BaseException as exc:
            for slot in batch:
                slot.error = exc if slot is own else CombinerFailed(f"{type(exc).__name__}: {exc}")
                slot.done = True
            raise
        for slot, answer in zip(batch, answers, strict=True):
            slot.result = answer
            slot.done = True

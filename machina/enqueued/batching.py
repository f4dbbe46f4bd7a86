"""The job writer of machina-enqueued: requests from every connection, committed in batches.

A handler hands the request body to :meth:`JobWriter.submit` and awaits its outcome.  A few committer
threads (``COMMITTERS``) each take every request waiting, up to ``MAX_BATCH``, parse them and give the valid
ones to :meth:`~machina.queue.BaseQueue.enqueue_batch`: on the file queue that is one WAL append per job and
one group commit (one ``fdatasync``) for the batch, then the placements.  A request is answered only once
that call returned, so "queued" still means durable under MACHINA_WAL_FSYNC.

Why not a pool thread per request (the earlier design): with 32 clients on 2 cores, 32 threads each doing a
group commit of its own and each handing its answer back to the event loop made 32 clients slower than one
(docs/SPEED.md).  Here the event loop is woken once per batch, and while one committer waits for its
fdatasync (the GIL released) the next one gathers what arrived meanwhile.

A backend that cannot commit a batch together (PostgreSQL: a transaction per job) gets
MACHINA_API_THREADS committers taking one request each instead, which is the earlier design.

One client alone: when the server says a single connection is open (``alone``), no committer is busy and
nothing waits, the event loop writes the request itself.  Handing it to a committer and the answer back
costs two thread wake-ups, about 0.1 ms of a 0.6 ms request on a 2-core machine (x1.4 req/s at 1 client,
bench/ab_enqueued.py); with no other connection open there is nobody the loop could serve meanwhile.
Only while the disk answers quickly (the last write took under :data:`INLINE_MAX_S`): once a write
shows the disk slow, requests go to the committers again, so a stall holds the loop (which answers
``/health`` and keeps the watchdog fed) for that one write, not longer.  A request that finds a
committer at work waits for the next batch, however long the stall lasts, as before.

Stopping: :meth:`close` lets the committers write everything already submitted, then joins them; a submit
after that is refused with :class:`WriterClosed`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from machina.queue import BaseQueue, EnqueueResult, InvalidRequest, load_request

log = logging.getLogger(__name__)

#: Committer threads: two, so that one gathers and writes a batch while the other waits for its fdatasync.
COMMITTERS = 2
#: Requests in one batch at most (one WAL group commit); more wait for the next batch.
MAX_BATCH = 64
#: The event loop writes a lone client's request itself only while the last write took less than this (s).
INLINE_MAX_S = 0.02

#: What a submitted request comes to: the request_id its body named (None when it named none or could not
#: be parsed) and its EnqueueResult, or the exception enqueue raises for it (nothing of it was queued).
Outcome = tuple[str | None, EnqueueResult | Exception]


class WriterClosed(Exception):
    """The writer is stopping: the request was not taken."""


@dataclass
class _Pending:
    body: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class JobWriter:
    def __init__(
        self,
        queue: BaseQueue,
        committers: int = COMMITTERS,
        max_batch: int = MAX_BATCH,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        self.queue = queue
        self.max_batch = max_batch
        self.alone = alone  # True while the server has one connection open (None: never write inline)
        self._cond = threading.Condition(threading.Lock())
        self._waiting: deque[_Pending] = deque()
        self._busy = 0  # batches being written (by the committers or the event loop)
        self._last_write_s = 0.0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"enqueue-commit-{n}", daemon=True) for n in range(committers)
        ]
        self.batches = 0
        self.jobs = 0
        self.inline = 0  # requests the event loop wrote itself

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def submit(self, body: bytes) -> Outcome:
        """On the event loop: the outcome of writing this request body into the queue."""
        loop = asyncio.get_running_loop()
        pending = _Pending(body, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise WriterClosed("machina-enqueued is stopping")
            inline = self._may_write_inline()
            if inline:
                self._busy += 1
            else:
                self._waiting.append(pending)
                self._cond.notify()
        if inline:
            try:
                self.inline += 1
                return self._write_reporting([pending])[0]
            finally:
                with self._cond:
                    self._busy -= 1
        return await pending.future

    def _may_write_inline(self) -> bool:
        """Under the lock: nothing else to write, a quick disk, and one connection (see the module text)."""
        if self._waiting or self._busy or self._last_write_s >= INLINE_MAX_S or self.alone is None:
            return False
        return self.alone()

    def close(self) -> None:
        """Write everything submitted so far, then stop the committers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    # --- the committer threads -------------------------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                outcomes = self._write_reporting(batch)
            finally:
                with self._cond:
                    self._busy -= 1
            _deliver(batch, outcomes)

    def _write_reporting(self, batch: list[_Pending]) -> list[Outcome]:
        started = time.monotonic()
        try:
            return self._write(batch)
        except BaseException as exc:  # a bug: every request of the batch hears of it, none is left hanging
            log.exception("writing a batch of %d jobs failed", len(batch))
            return [(None, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))] * len(batch)
        finally:
            self._last_write_s = time.monotonic() - started

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._waiting:
                if self._closed:
                    return None
                self._cond.wait()
            count = min(len(self._waiting), self.max_batch)
            self._busy += 1
            return [self._waiting.popleft() for _ in range(count)]

    def _write(self, batch: list[_Pending]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(batch)
        requests = []
        positions = []
        for i, pending in enumerate(batch):
            try:
                request = pending.context.run(load_request, pending.body)
            except InvalidRequest as exc:
                outcomes[i] = (None, exc)
                continue
            requests.append(request)
            positions.append(i)
        if requests:
            results = self.queue.enqueue_batch(requests)
            for i, request, result in zip(positions, requests, results, strict=True):
                outcomes[i] = (request.request_id, result)
        self.batches += 1
        self.jobs += len(requests)
        return outcomes  # type: ignore[return-value]


def _deliver(batch: list[_Pending], outcomes: list[Outcome]) -> None:
    """Hand each outcome to its request's event loop: one wake-up per loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]] = {}
    for pending, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, answers)
        except RuntimeError:  # the loop is closed: nobody is waiting for these answers any more
            log.warning("%d enqueue answers had no one to go to (the HTTP loop is closed)", len(answers))


def _resolve(answers: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for future, outcome in answers:
        if not future.done():  # a cancelled request (client gone, shutdown) is no longer waiting
            future.set_result(outcome)

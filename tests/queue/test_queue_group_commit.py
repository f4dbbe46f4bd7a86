"""The WAL's group commit: appends go on while a sync runs, and a failed sync fails every record it may cover.

Two committers append to one process's segment at once when machina-enqueued's committer threads each
write a batch (``enqueue_batch``), and when worker threads record claims and completions.

Each test holds the WAL's fdatasync at the ``wal.sync`` fault point while a second enqueuer runs, so what
happens during a sync is decided by the test, not by the scheduler.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.queue import FileQueue, QueueConfig, QueueNotWritable, faults
from machina.queue.request import validate_request

REQUEST = {"goal_id": "goal.X.v1"}
WAIT_S = 10.0


@pytest.fixture
def queue(machina_root: Path) -> Iterator[FileQueue]:
    q = FileQueue(str(machina_root), QueueConfig(fsync=True, scan_ms=20))
    yield q
    faults.hook = None
    q.close()


class _SecondEnqueuer:
    """At the first WAL sync, starts another enqueue and waits (bounded) until its ENQ record is appended."""

    def __init__(self, queue: FileQueue, then: Any = None) -> None:
        self.queue = queue
        self.then = then
        self.appended = threading.Event()
        self.syncs = 0
        self.appended_during_sync = False
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._enqueue, name="second-enqueuer")

    def hook(self, name: str, context: dict[str, Any]) -> None:
        if name == "enqueue.logged" and threading.current_thread() is self.thread:
            self.appended.set()
        if name != "wal.sync":
            return
        self.syncs += 1
        if self.syncs == 1:
            self.thread.start()
            self.appended_during_sync = self.appended.wait(WAIT_S)
            if self.then is not None:
                self.then()

    def _enqueue(self) -> None:
        # A batch, as machina-enqueued's second committer thread writes one: enqueue() callers of one
        # process are combined into one committer (machina.queue.combining), batches are not.
        (outcome,) = self.queue.enqueue_batch([validate_request(REQUEST, request_id="second")])
        self.outcome.append(outcome)

    def join(self) -> Any:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the second enqueue never returned"
        (outcome,) = self.outcome
        return outcome


def _eio() -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_a_second_enqueuer_appends_while_the_wal_syncs(queue: FileQueue, machina_root: Path) -> None:
    second = _SecondEnqueuer(queue)
    faults.hook = second.hook
    first = queue.enqueue(REQUEST, request_id="first")
    assert second.appended_during_sync, "the append lock was held through the fdatasync: no batch can form"
    other = second.join()
    assert not isinstance(other, Exception), other
    assert other.name != first.name
    assert len(list((machina_root / "queue" / "inbox").iterdir())) == 2
    assert second.syncs >= 2, "the second record needed a sync of its own: it was appended after the first began"


def test_a_failed_wal_sync_fails_what_was_appended_during_it(queue: FileQueue, machina_root: Path) -> None:
    """The second record went to the segment whose fdatasync failed.  It must not be acknowledged, even
    though the failed segment is closed by then and the next sync would find nothing to do."""
    second = _SecondEnqueuer(queue, then=_eio)
    faults.hook = second.hook
    with pytest.raises(QueueNotWritable, match="EIO"):
        queue.enqueue(REQUEST, request_id="first")
    assert second.appended_during_sync
    assert isinstance(second.join(), QueueNotWritable), "a record whose fdatasync failed was acknowledged"
    faults.hook = None
    assert list((machina_root / "queue" / "inbox").iterdir()) == [], "refused means nothing was queued"
    for rid in ("first", "second"):
        again = queue.enqueue(REQUEST, request_id=rid)
        assert not again.deduplicated, "a refused enqueue left a dedup entry"
    assert len(list((machina_root / "queue" / "inbox").iterdir())) == 2
    other = FileQueue(str(machina_root), QueueConfig(fsync=True, scan_ms=20))
    try:  # another process reads the WAL: the refused records answer nothing, the accepted ones do
        assert all(other.enqueue(REQUEST, request_id=rid).deduplicated for rid in ("first", "second"))
    finally:
        other.close()

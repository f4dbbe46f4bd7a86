"""The job writer's two ways to a durable job (machina/enqueued/batching.py), on a real file queue: the event
loop writes a lone client's request itself while the disk is quick, and hands everything else to the
committer threads; either way the answer is the job it wrote."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from machina.enqueued import batching
from machina.enqueued.batching import JobWriter
from machina.queue import EnqueueResult, FileQueue, InvalidRequest, QueueConfig
from machina.root import init_root

BODY = b'{"goal_id": "goal.WRITER.v1", "inputs": {"n": 1}}'


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[FileQueue]:
    init_root(str(tmp_path))
    q = FileQueue(str(tmp_path), QueueConfig(fsync=True))
    yield q
    q.close()


def submit(writer: JobWriter, body: bytes = BODY) -> tuple[batching.Outcome, bool]:
    """The outcome of one submit from an event loop, and whether the event loop wrote it itself."""
    inline_before, batches_before = writer.inline, writer.batches
    outcome = asyncio.run(writer.submit(body))
    assert writer.batches == batches_before + 1  # written once, by one of the two
    return outcome, writer.inline == inline_before + 1


def queued_body(root: Path, result: EnqueueResult) -> dict:  # type: ignore[type-arg]
    return json.loads((root / "queue" / "inbox" / result.name).read_text())


@contextmanager
def running(queue: FileQueue, alone: bool) -> Iterator[JobWriter]:
    writer = JobWriter(queue, alone=lambda: alone)
    writer.start()
    try:
        yield writer
    finally:
        writer.close()


@pytest.mark.parametrize(("alone", "by_loop"), [(True, True), (False, False)], ids=["one-connection", "several"])
def test_who_writes_depends_on_the_connections(queue: FileQueue, tmp_path: Path, alone: bool, by_loop: bool) -> None:
    with running(queue, alone) as writer:
        (rid, result), written_by_loop = submit(writer)
    assert written_by_loop is by_loop
    assert rid is None and isinstance(result, EnqueueResult)
    assert queued_body(tmp_path, result)["inputs"] == {"n": 1}


def test_after_a_slow_write_a_lone_client_goes_to_the_committers(queue: FileQueue) -> None:
    with running(queue, alone=True) as writer:
        assert submit(writer)[1]  # quick: the loop writes it
        writer._last_write_s = batching.INLINE_MAX_S  # as a stalling disk leaves it
        assert not submit(writer)[1], "a slow disk must stall a committer, not the event loop"
        assert submit(writer)[1]  # that write was quick again: back to the loop


def test_a_bad_body_written_inline_is_answered_as_by_a_committer(queue: FileQueue) -> None:
    answers = []
    for alone in (True, False):
        with running(queue, alone) as writer:
            answers.append(submit(writer, b'{"goal_id": 5}')[0])
    for rid, result in answers:
        assert rid is None and isinstance(result, InvalidRequest)
    assert str(answers[0][1]) == str(answers[1][1])

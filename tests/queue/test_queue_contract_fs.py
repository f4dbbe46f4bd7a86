"""FileQueue passes the queue contract (fsync off and on, WAL on and off)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from queue_contract import QueueContract

from machina.clock import Clock
from machina.queue import FileQueue, QueueConfig


def _factory(root: Path, base: dict[str, Any]) -> Iterator[Callable[..., FileQueue]]:
    opened: list[FileQueue] = []

    def make(clock: Clock | None = None, **overrides: Any) -> FileQueue:
        config = QueueConfig(**{"scan_ms": 20, **base, **overrides})
        queue = FileQueue(str(root), config, **({"clock": clock} if clock else {}))
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()


class TestFileQueue(QueueContract):
    @pytest.fixture
    def make_queue(self, machina_root: Path) -> Iterator[Callable[..., FileQueue]]:
        yield from _factory(machina_root, {})


class TestFileQueueDurable(QueueContract):
    """The prod profile: fsync and CRC on, so group commit and checksummed records run under the contract."""

    @pytest.fixture
    def make_queue(self, machina_root: Path) -> Iterator[Callable[..., FileQueue]]:
        yield from _factory(machina_root, {"fsync": True, "wal_crc32": True})


class TestFileQueueWithoutWal(QueueContract):
    @pytest.fixture
    def make_queue(self, machina_root: Path) -> Iterator[Callable[..., FileQueue]]:
        yield from _factory(machina_root, {"wal_enable": False})

    @pytest.mark.skip(reason="without a WAL, dedup entries live in one process's memory (documented)")
    def test_dedup_is_seen_by_another_queue_on_the_same_store(self) -> None: ...

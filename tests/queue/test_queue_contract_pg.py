"""PgQueue passes the queue contract on a real PostgreSQL server (synchronous_commit off and on)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pg_support import pg_factory, pg_server, pg_url, requires_postgres
from queue_contract import QueueContract

__all__ = ["pg_server", "pg_url"]  # fixtures, imported for pytest

pytestmark = requires_postgres


class TestPgQueue(QueueContract):
    @pytest.fixture
    def make_queue(self, pg_url: str) -> Iterator[Callable[..., Any]]:
        yield from pg_factory(pg_url, {})


class TestPgQueueDurable(QueueContract):
    """The prod profile: every commit waits for its WAL flush (synchronous_commit=on)."""

    @pytest.fixture
    def make_queue(self, pg_url: str) -> Iterator[Callable[..., Any]]:
        yield from pg_factory(pg_url, {"fsync": True})

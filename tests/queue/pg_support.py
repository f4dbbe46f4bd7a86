"""A real PostgreSQL server for the queue's tests: one per test module, a fresh database per test.

Skips, saying why, only where the server binaries are absent (``.ci/run`` installs Debian's postgresql).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from machina.clock import Clock
from machina.queue import QueueConfig
from machina.testing.pgserver import PgServer, find_binaries, missing_reason

_numbers = itertools.count(1)

requires_postgres = pytest.mark.skipif(find_binaries() is None, reason=missing_reason())


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    if find_binaries() is None:
        pytest.skip(missing_reason())
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty schema (its own tables, in one shared test database) for this test."""
    return pg_server.create_schema("tests", f"t{next(_numbers)}")


def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    """One statement on ``url`` behind the queue's back (what a test checks or breaks)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return list(cur.fetchall()) if cur.description else []


def pg_factory(url: str, base: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """``make(clock=None, **config) -> PgQueue`` on one database; every queue closed at the end."""
    from machina.queue.pg import PgQueue

    opened: list[PgQueue] = []

    def make(clock: Clock | None = None, **overrides: Any) -> PgQueue:
        config = QueueConfig(**{"scan_ms": 20, "url": url, **base, **overrides})
        queue = PgQueue(url, config, **({"clock": clock} if clock else {}))
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()

"""What only the PostgreSQL queue has: worker ids qualified by host, a claim whose reply was lost given
back, the session options it sets beside the URL's own."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pg_support import pg_factory, pg_server, pg_url, requires_postgres, sql

from machina.clock import FakeClock
from machina.queue.pg import UNKNOWN_CLAIM_GRACE_MS

__all__ = ["pg_server", "pg_url"]  # fixtures, imported for pytest

pytestmark = requires_postgres


@pytest.fixture
def make_queue(pg_url: str) -> Iterator[Callable[..., Any]]:
    yield from pg_factory(pg_url, {})


def test_worker_ids_are_qualified_by_the_host_name(make_queue: Any, pg_url: str) -> None:
    q = make_queue()
    name = q.enqueue({"goal_id": "g"}).name
    q.claim("1")
    owner = q.job_status(name).owner
    host = socket.gethostname()
    assert (owner["worker_id"], owner["host"], owner["alive"]) == ("1", host, True)
    assert sql(pg_url, "SELECT owner_id FROM machina_jobs") == [(f"{host}/1",)]


def test_a_claim_whose_reply_was_lost_goes_back_to_the_inbox(make_queue: Any, pg_url: str) -> None:
    clock = FakeClock()
    q = make_queue(clock=clock)
    kept = q.enqueue({"goal_id": "g"}).name
    lost = q.enqueue({"goal_id": "g"}).name
    held = q.claim("w1")
    assert held.name == kept
    # The claim statement committed, but its answer never reached the caller (the connection broke).
    now = int(clock.time() * 1000)
    sql(
        pg_url,
        f"UPDATE machina_jobs SET state = 'processing', owner_id = '{socket.gethostname()}/w1', "
        f"claimed_ms = {now} WHERE name = '{lost}'",
    )
    assert q.recover() == [], "a young claim may still be on its way to its caller"
    clock.advance(UNKNOWN_CLAIM_GRACE_MS / 1000 + 1)
    q.heartbeat(held)
    assert q.recover() == [lost]
    assert q.job_status(lost).state == "inbox" and q.job_status(lost).attempt == 2
    assert q.job_status(kept).state == "processing", "the claim its caller holds is left alone"
    q.complete(held)


@pytest.mark.parametrize(("fsync", "expected"), [(False, "off"), (True, "on")])
def test_synchronous_commit_follows_fsync_and_the_urls_options_stay(
    make_queue: Any, pg_url: str, fsync: bool, expected: str
) -> None:
    q = make_queue(fsync=fsync)
    assert "options=-csearch_path" in pg_url
    seen = q._pool.run("show", lambda conn: conn.execute("SHOW synchronous_commit").fetchone()[0])
    path = q._pool.run("show", lambda conn: conn.execute("SHOW search_path").fetchone()[0])
    assert seen == expected and path == pg_url.rsplit("%3D", 1)[1]

"""Requests written in one batch (machina/enqueued/batching.py) still get answers of their own: concurrent
clients with valid, repeated and invalid bodies each hear about their own request, and each name answered
is the file holding that client's body."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from enqueued_kit import TOKEN, bearer, inbox

from machina.queue import QueueConfig
from machina.queue.pg import PgQueue, migrate_database
from machina.testing.pgserver import PgServer
from tests.queue.pg_support import pg_server

__all__ = ["pg_server"]  # a fixture, imported for pytest


def test_concurrent_clients_each_get_their_own_answer(token_daemon: Any) -> None:
    bodies: list[dict[str, Any]] = []
    bodies += [{"goal_id": "goal.BATCH.v1", "inputs": {"client": n}, "request_id": f"own-{n}"} for n in range(12)]
    bodies += [{"goal_id": "goal.BATCH.v1", "inputs": {"copy": True}, "request_id": "shared"} for _ in range(8)]
    bodies += [{"goal_id": "not a goal id", "inputs": {"bad": n}} for n in range(8)]
    start = threading.Barrier(len(bodies))

    def post(body: dict[str, Any]) -> requests.Response:
        start.wait(timeout=10)  # all at once, so that they meet in batches
        return requests.post(token_daemon.url("/enqueue"), json=body, headers=bearer(), timeout=30)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(post, bodies))

    queued = {}
    for body, answer in zip(bodies, answers, strict=True):
        if body["goal_id"] == "not a goal id":
            assert answer.status_code == 400 and "goal_id" in answer.json()["error"], answer.text
            continue
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        assert doc["request_id"] == body["request_id"]
        queued.setdefault(body["request_id"], set()).add(doc["queued"])
        written = json.loads((token_daemon.root / "queue" / "inbox" / f"{doc['queued']}").read_text())
        assert written["inputs"] == body["inputs"], "the name answered is the file holding this client's body"
    assert all(len(names) == 1 for names in queued.values()), "copies of one request make one job"
    copies = [a.json() for b, a in zip(bodies, answers, strict=True) if b.get("request_id") == "shared"]
    assert sum(not c.get("deduplicated", False) for c in copies) == 1
    assert len(inbox(token_daemon.root)) == 13  # 12 own requests and one shared


def test_on_postgresql_each_request_is_its_own_transaction(start_daemon: Any, pg_server: PgServer) -> None:
    """PostgreSQL cannot commit a batch together: the writer takes one request per thread, as many at once as
    MACHINA_API_THREADS, and every client still hears about its own job."""
    url = pg_server.create_schema("tests", "enqueued_batches")
    migrate_database(url)
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_QUEUE_URL=url, MACHINA_API_THREADS="4")
    bodies = [{"goal_id": "goal.BATCH.v1", "inputs": {"client": n}, "request_id": f"pg-{n}"} for n in range(16)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(
            pool.map(lambda b: requests.post(daemon.url("/enqueue"), json=b, headers=bearer(), timeout=30), bodies)
        )
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    with PgQueue(url, QueueConfig(url=url)) as look:
        for body, answer in zip(bodies, answers, strict=True):
            status = look.job_status(answer.json()["queued"], with_request=True)
            assert status.state == "inbox" and status.request["inputs"] == body["inputs"]
        assert look.stats().sizes["inbox"] == len(bodies)

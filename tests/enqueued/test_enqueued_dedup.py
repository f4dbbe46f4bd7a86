"""request_id dedup through HTTP: the same request again, another body, concurrent copies, and a restart
(clean or kill -9) of the daemon in between."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from enqueued_kit import TOKEN, bearer, inbox

JOB = {"goal_id": "goal.DEDUP.v1", "inputs": {"n": 1}, "request_id": "order-1234"}


def post(daemon: Any, job: dict[str, Any]) -> Any:
    return requests.post(daemon.url("/enqueue"), json=job, headers=bearer(), timeout=10)


def test_same_request_again_answers_the_first_name(token_daemon: Any) -> None:
    first = post(token_daemon, JOB).json()
    again = post(token_daemon, JOB)
    assert again.status_code == 200
    assert again.json() == {"ok": True, "queued": first["queued"], "request_id": "order-1234", "deduplicated": True}
    # Key order and spacing do not matter: the canonical body is compared.
    reordered = post(token_daemon, {"request_id": "order-1234", "inputs": {"n": 1}, "goal_id": "goal.DEDUP.v1"})
    assert reordered.json()["queued"] == first["queued"]
    assert inbox(token_daemon.root) == [first["queued"]]
    metrics = requests.get(token_daemon.url("/metrics"), headers=bearer(), timeout=10).text
    assert "machina_enqueue_dedup_hits_total 2.0" in metrics


def test_same_request_id_with_another_body_is_409(token_daemon: Any) -> None:
    first = post(token_daemon, JOB).json()
    conflict = post(token_daemon, {**JOB, "inputs": {"n": 2}})
    assert conflict.status_code == 409
    assert "order-1234" in conflict.json()["error"] and conflict.json()["ok"] is False
    assert inbox(token_daemon.root) == [first["queued"]]
    assert "request_id=order-1234" in token_daemon.log()  # the refusal is logged under the client's id


def test_concurrent_copies_make_one_job(token_daemon: Any) -> None:
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: post(token_daemon, JOB).json(), range(32)))
    names = {a["queued"] for a in answers}
    assert len(names) == 1 and inbox(token_daemon.root) == list(names)
    assert sum(1 for a in answers if not a.get("deduplicated")) == 1


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_dedup_survives_a_restart(start_daemon: Any, how: str) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_WAL_FSYNC="1")
    first = post(daemon, JOB).json()
    assert daemon.stop(getattr(signal, how)) == (0 if how == "SIGTERM" else -signal.SIGKILL)
    daemon.start()
    again = post(daemon, JOB).json()
    assert again == {**first, "deduplicated": True}
    assert post(daemon, {**JOB, "inputs": {"n": 3}}).status_code == 409
    assert inbox(daemon.root) == [first["queued"]]

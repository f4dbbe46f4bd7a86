"""Bad bodies: each a clear 4xx, nothing queued; the body cap holds whatever Content-Length says."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from enqueued_kit import TOKEN, bearer, http_exchange, inbox, status_of

CAP = 4096


@pytest.fixture
def daemon(start_daemon: Any) -> Any:
    return start_daemon(
        MACHINA_API_TOKEN=TOKEN, MACHINA_API_MAX_BODY_BYTES=str(CAP), MACHINA_API_BODY_TIMEOUT_MS="1500"
    )


def post(daemon: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return requests.post(daemon.url("/enqueue"), data=body, headers={**bearer(), **(headers or {})}, timeout=10)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'["goal_id", "goal.X.v1"]', "expected a JSON object, got an array"),
        (b'"goal.X.v1"', "expected a JSON object, got a string"),
        (b"{}", "goal_id is required"),
        (b'{"goal_id": ""}', "goal_id must be"),
        (b'{"goal_id": "../../etc/passwd"}', "goal_id must be"),
        (b'{"goal_id": 12}', "goal_id must be"),
        (b'{"goal_id": "g", "_system_prompt": "x"}', "reserved"),
        (b'{"goal_id": "g", "_meta": {}}', "reserved"),
        (b'{"goal_id": "g", "goal_id": "h"}', "duplicate key"),
        (b'{"goal_id": "g", "n": NaN}', "not valid JSON"),
        (b'{"goal_id": "g", "control_mode": "YOLO"}', "control_mode must be one of"),
        (b'{"goal_id": "g", "_queue": {"priority": 10000}}', "_queue.priority"),
        (b'{"goal_id": "g", "request_id": "has spaces in it"}', "request_id must be"),
        (b'{"goal_id": "g", "_capabilities": {"allowed_tools": ["AID.*.X"]}}', "not a tool pattern"),
    ],
)
def test_bad_bodies_get_400_with_a_clear_error(daemon: Any, body: bytes, expected: str) -> None:
    answer = post(daemon, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["ok"] is False and expected in answer.json()["error"]
    assert inbox(daemon.root) == []


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5e999"])
def test_d9_a_number_too_large_to_be_finite_is_refused_with_400(daemon: Any, number: bytes) -> None:
    """``1e400`` reads as infinity: accepted, it was written as ``Infinity`` and failed when claimed."""
    answer = post(daemon, b'{"goal_id": "goal.NOOP.v1", "inputs": {"n": ' + number + b"}}")
    assert answer.status_code == 400, answer.text
    assert f"number {number.decode()} is out of range" in answer.json()["error"]
    assert inbox(daemon.root) == []
    assert post(daemon, b'{"goal_id": "goal.NOOP.v1", "inputs": {"n": 1e300}}').status_code == 200


def test_a_good_body_keeps_unknown_keys_and_gets_the_rid_suffix(daemon: Any) -> None:
    job = {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"pattern": "ERROR"}, "request_id": "trace-42", "x_custom": [1]}
    answer = post(daemon, json.dumps(job).encode())
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc == {"ok": True, "queued": doc["queued"], "request_id": "trace-42"}
    from machina.queue.names import fnv1a32

    assert doc["queued"].endswith(f"_rid{fnv1a32('trace-42'):08x}.json")
    assert answer.headers["X-Request-Id"] == "trace-42"
    stored = json.loads((daemon.root / "queue" / "inbox" / doc["queued"]).read_text())
    assert stored == job


def test_body_over_the_cap_by_content_length_is_refused_before_reading(daemon: Any) -> None:
    body = json.dumps({"goal_id": "g", "blob": "x" * CAP}).encode()
    answer = post(daemon, body)
    assert answer.status_code == 413 and "over 4096 bytes" in answer.json()["error"]
    assert answer.headers["Connection"] == "close"
    # Exactly at the cap is fine.
    exact = b'{"goal_id":"g","pad":"' + b"y" * (CAP - 24) + b'"}'
    assert len(exact) == CAP
    assert post(daemon, exact).status_code == 200
    assert len(inbox(daemon.root)) == 1


def test_chunked_body_over_the_cap_is_cut_off_while_reading(daemon: Any) -> None:
    def chunks():
        yield b'{"goal_id":"g","blob":"'
        for _ in range(100):
            yield b"z" * 1000
        yield b'"}'

    answer = requests.post(daemon.url("/enqueue"), data=chunks(), headers=bearer(), timeout=10)
    assert answer.status_code == 413
    assert inbox(daemon.root) == []


def test_chunked_body_under_the_cap_is_accepted(daemon: Any) -> None:
    answer = requests.post(
        daemon.url("/enqueue"), data=iter([b'{"goal_id":', b'"goal.CHUNKED.v1"}']), headers=bearer(), timeout=10
    )
    assert answer.status_code == 200, answer.text


def raw_post(body: bytes, content_length: int | None, extra: bytes = b"") -> bytes:
    head = b"POST /enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    if content_length is not None:
        head += b"Content-Length: %d\r\n" % content_length
    return head + extra + b"\r\n" + body


def test_content_length_smaller_than_the_body(daemon: Any) -> None:
    """Only Content-Length bytes are the body; the rest is not a valid next request: 400 and closed."""
    body = b'{"goal_id":"g","pad":"' + b"p" * 200 + b'"}'
    with daemon.connect() as sock:
        raw = http_exchange(sock, raw_post(body, 10))
    assert status_of(raw) == 400
    assert b"Invalid HTTP request" in raw or b"not JSON" in raw
    assert inbox(daemon.root) == []


def test_content_length_larger_than_the_body_times_out(daemon: Any) -> None:
    """The server waits for the promised bytes only up to the body timeout, then 408 and close."""
    with daemon.connect() as sock:
        raw = http_exchange(sock, raw_post(b'{"goal_id":"g"}', 1000), timeout=15)
    assert status_of(raw) == 408
    assert inbox(daemon.root) == []


def test_lying_content_length_over_the_cap_with_a_small_body(daemon: Any) -> None:
    with daemon.connect() as sock:
        raw = http_exchange(sock, raw_post(b'{"goal_id":"g"}', CAP + 1))
    assert status_of(raw) == 413
    assert inbox(daemon.root) == []


def test_conflicting_length_headers_are_refused(daemon: Any) -> None:
    """Request smuggling shapes (two lengths, length plus chunked) never reach the queue."""
    body = b'{"goal_id":"g"}'
    for extra in (b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"):
        with daemon.connect() as sock:
            raw = http_exchange(sock, raw_post(body, len(body), extra))
        assert status_of(raw) == 400, raw
    assert inbox(daemon.root) == []


def test_unknown_paths_and_methods(daemon: Any) -> None:
    assert requests.get(daemon.url("/nope"), timeout=10).status_code == 404
    wrong = requests.get(daemon.url("/enqueue"), headers=bearer(), timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert requests.delete(daemon.url("/health"), timeout=10).status_code == 405
    job = requests.get(daemon.url("/jobs/..%2f..%2fetc%2fpasswd"), headers=bearer(), timeout=10)
    assert job.status_code == 404


def test_job_status_follows_the_job(daemon: Any) -> None:
    queued = post(daemon, b'{"goal_id":"goal.STATUS.v1"}').json()["queued"]
    status = requests.get(daemon.url(f"/jobs/{queued}"), headers=bearer(), timeout=10)
    assert status.status_code == 200
    doc = status.json()
    assert (doc["ok"], doc["name"], doc["state"], doc["attempt"], doc["results"]) == (True, queued, "inbox", 1, [])

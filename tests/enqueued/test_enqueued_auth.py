"""The auth matrix of DESIGN.md section 4 against a real daemon: fail closed, token, HMAC, both."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from enqueued_kit import SECRET, TOKEN, bearer, inbox, signed

JOB = {"goal_id": "goal.AUTH.v1"}
BODY = json.dumps(JOB).encode()
PROTECTED = [
    ("POST", "/enqueue"),
    ("GET", "/stats"),
    ("GET", "/metrics"),
    ("GET", "/jobs/p5000_rq_0000000000001_0000000000.json"),
]


def call(daemon: Any, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Any:
    return requests.request(
        method, daemon.url(path), headers=headers, data=body if method == "POST" else None, timeout=10
    )


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_nothing_configured_fails_closed_with_403(start_daemon: Any, method: str, path: str) -> None:
    daemon = start_daemon()
    assert "every endpoint but /health answers 403" in daemon.log()
    answer = call(daemon, method, path, bearer("anything"), BODY)
    assert answer.status_code == 403
    assert answer.json()["ok"] is False and "not configured" in answer.json()["error"]
    assert requests.get(daemon.url("/health"), timeout=10).json() == {"ok": True}
    assert inbox(daemon.root) == []


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_token_is_required_on_every_protected_endpoint(token_daemon: Any, method: str, path: str) -> None:
    for headers in (None, {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("wrong-token-0123456789"), bearer("")):
        answer = call(token_daemon, method, path, headers, BODY)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert inbox(token_daemon.root) == []
    good = call(token_daemon, method, path, bearer(), BODY)
    assert good.status_code in (200, 404)  # 404: the job named in the path does not exist


def test_token_and_secrets_never_appear_in_answers_or_logs(token_daemon: Any) -> None:
    near_miss = TOKEN[:-1] + "x"
    answer = call(token_daemon, "POST", "/enqueue", bearer(near_miss), BODY)
    assert answer.status_code == 401 and near_miss not in answer.text and TOKEN not in answer.text
    ok = call(token_daemon, "POST", "/enqueue", bearer(), BODY)
    assert ok.status_code == 200
    metrics = call(token_daemon, "GET", "/metrics", bearer()).text
    assert 'machina_auth_failures_total{reason="bad_token"} 1.0' in metrics
    log = token_daemon.log()
    assert TOKEN not in log and TOKEN not in metrics


@pytest.fixture
def hmac_daemon(start_daemon: Any) -> Any:
    return start_daemon(MACHINA_API_HMAC_SECRET=SECRET, MACHINA_API_HMAC_TTL_SEC="30")


def test_hmac_signed_request_is_accepted(hmac_daemon: Any) -> None:
    answer = call(hmac_daemon, "POST", "/enqueue", signed("POST", "/enqueue", BODY), BODY)
    assert answer.status_code == 200, answer.text
    assert inbox(hmac_daemon.root) == [answer.json()["queued"]]
    stats = call(hmac_daemon, "GET", "/stats?x=1", signed("GET", "/stats?x=1"))
    assert stats.status_code == 200 and stats.json()["sizes"]["inbox"] == 1


@pytest.mark.parametrize(
    ("case", "expected_error"),
    [
        ("unsigned", "missing request signature"),
        ("wrong secret", "invalid request signature"),
        ("other body", "invalid request signature"),
        ("other path", "invalid request signature"),
        ("other method", "invalid request signature"),
        ("expired", "expired"),
        ("future", "in the future"),
        ("garbled signature", "v1=<64 hex digits>"),
        ("timestamp not a number", "unix seconds"),
    ],
)
def test_hmac_refusals(hmac_daemon: Any, case: str, expected_error: str) -> None:
    now = int(time.time())
    headers = {
        "unsigned": {},
        "wrong secret": signed("POST", "/enqueue", BODY, secret="not-the-secret-0123456789"),
        "other body": signed("POST", "/enqueue", b'{"goal_id":"goal.OTHER.v1"}'),
        "other path": signed("POST", "/enqueue?x=1", BODY),
        "other method": signed("PUT", "/enqueue", BODY),
        "expired": signed("POST", "/enqueue", BODY, ts=now - 31 - 5),
        "future": signed("POST", "/enqueue", BODY, ts=now + 31 + 5),
        "garbled signature": {**signed("POST", "/enqueue", BODY), "X-Machina-Signature": "sha256=abc"},
        "timestamp not a number": {**signed("POST", "/enqueue", BODY), "X-Machina-Ts": "yesterday"},
    }[case]
    answer = call(hmac_daemon, "POST", "/enqueue", headers, BODY)
    assert answer.status_code == 401, answer.text
    assert expected_error in answer.json()["error"]
    assert inbox(hmac_daemon.root) == []


def test_replayed_nonce_is_refused(hmac_daemon: Any) -> None:
    headers = signed("POST", "/enqueue", BODY)
    first = call(hmac_daemon, "POST", "/enqueue", headers, BODY)
    replay = call(hmac_daemon, "POST", "/enqueue", headers, BODY)
    assert first.status_code == 200
    assert replay.status_code == 401 and "nonce already used" in replay.json()["error"]
    # The same nonce with a fresh signature (another timestamp) is still refused within the window.
    again = call(
        hmac_daemon,
        "POST",
        "/enqueue",
        signed("POST", "/enqueue", BODY, nonce=headers["X-Machina-Nonce"], ts=int(time.time()) + 1),
        BODY,
    )
    assert again.status_code == 401 and "nonce already used" in again.json()["error"]
    assert inbox(hmac_daemon.root) == [first.json()["queued"]]


def test_badly_signed_or_expired_requests_cannot_burn_a_nonce(hmac_daemon: Any) -> None:
    nonce = "nonce-that-must-stay-usable"
    for bad in (
        {**signed("POST", "/enqueue", BODY, nonce=nonce, secret="wrong-secret-0123456789")},
        {**signed("POST", "/enqueue", BODY, nonce=nonce), "X-Machina-Signature": "v1=" + "0" * 64},
        signed("POST", "/enqueue", BODY, nonce=nonce, ts=int(time.time()) - 3600),
        {"X-Machina-Nonce": nonce},
    ):
        assert call(hmac_daemon, "POST", "/enqueue", bad, BODY).status_code == 401
    good = call(hmac_daemon, "POST", "/enqueue", signed("POST", "/enqueue", BODY, nonce=nonce), BODY)
    assert good.status_code == 200, good.text


def test_both_configured_require_both(start_daemon: Any) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_API_HMAC_SECRET=SECRET)
    only_token = call(daemon, "POST", "/enqueue", bearer(), BODY)
    only_signature = call(daemon, "POST", "/enqueue", signed("POST", "/enqueue", BODY), BODY)
    both = call(daemon, "POST", "/enqueue", {**bearer(), **signed("POST", "/enqueue", BODY)}, BODY)
    wrong_token = call(
        daemon, "POST", "/enqueue", {**bearer("nope-0123456789abcdef"), **signed("POST", "/enqueue", BODY)}, BODY
    )
    assert (only_token.status_code, only_signature.status_code) == (401, 401)
    assert "signature" in only_token.json()["error"] and "token" in only_signature.json()["error"]
    assert wrong_token.status_code == 401
    assert both.status_code == 200
    assert inbox(daemon.root) == [both.json()["queued"]]


def test_metrics_public_opens_metrics_only(start_daemon: Any) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_METRICS_PUBLIC="1")
    assert requests.get(daemon.url("/metrics"), timeout=10).status_code == 200
    assert requests.get(daemon.url("/stats"), timeout=10).status_code == 401
    assert requests.post(daemon.url("/enqueue"), data=BODY, timeout=10).status_code == 401


def test_rate_limits_answer_429_with_retry_after(start_daemon: Any) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, MACHINA_API_RPM="6", MACHINA_API_ENQUEUE_RPM="2")
    codes = [call(daemon, "POST", "/enqueue", bearer(), BODY).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = call(daemon, "POST", "/enqueue", bearer(), BODY)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 30
    # The general bucket (6 a minute) has 2 tokens left for other endpoints, then it refuses too.
    stats = [call(daemon, "GET", "/stats", bearer()).status_code for _ in range(3)]
    assert stats == [200, 200, 429]
    assert requests.get(daemon.url("/health"), timeout=10).status_code == 200  # never limited
    assert len(inbox(daemon.root)) == 2

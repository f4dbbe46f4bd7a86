"""Authenticator, NonceStore and RateLimiter on an injected clock: window edges, nonce expiry, persistence
across restarts, bucket refill and Retry-After, all without sleeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machina.clock import FakeClock
from machina.enqueued.auth import Authenticator, AuthFailure, sign
from machina.enqueued.nonces import NONCE_FILE, NonceStore
from machina.enqueued.ratelimit import RateLimiter, client_key

SECRET = "unit-test-secret-0123456789"
TTL = 60


def headers(clock: FakeClock, nonce: str, ts: int | None = None, body: bytes = b"{}", secret: str = SECRET) -> dict:
    ts_text = str(int(clock.time()) if ts is None else ts)
    return {
        b"x-machina-ts": ts_text.encode(),
        b"x-machina-nonce": nonce.encode(),
        b"x-machina-signature": sign(secret, ts_text, nonce, "POST", "/enqueue", body).encode(),
    }


def check(auth: Authenticator, hdrs: dict, body: bytes = b"{}") -> None:
    pending = auth.before_body(hdrs)
    auth.after_body(pending, "POST", "/enqueue", body)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def auth(clock: FakeClock) -> Authenticator:
    nonces = NonceStore(TTL, clock)
    nonces.loaded = True
    return Authenticator(None, SECRET, TTL, clock, nonces)


@pytest.mark.parametrize(("offset", "ok"), [(-TTL, True), (-TTL - 1, False), (TTL, True), (TTL + 1, False), (0, True)])
def test_timestamp_window_edges(auth: Authenticator, clock: FakeClock, offset: int, ok: bool) -> None:
    hdrs = headers(clock, f"n{offset}", ts=int(clock.time()) + offset)
    if ok:
        check(auth, hdrs)
    else:
        with pytest.raises(AuthFailure) as caught:
            check(auth, hdrs)
        assert caught.value.reason == ("expired" if offset < 0 else "future")


def test_a_nonce_is_accepted_once_within_the_window_then_forgotten(auth: Authenticator, clock: FakeClock) -> None:
    hdrs = headers(clock, "once")
    check(auth, hdrs)
    clock.advance(TTL)  # still inside the window: a replay is refused
    with pytest.raises(AuthFailure) as caught:
        check(auth, hdrs)
    assert caught.value.reason == "replayed_nonce"
    clock.advance(1)  # the timestamp has left the window: now refused as expired, and the nonce forgotten
    with pytest.raises(AuthFailure) as caught:
        check(auth, hdrs)
    assert caught.value.reason == "expired"
    check(auth, headers(clock, "once"))  # a fresh request may use the nonce again
    assert len(auth.nonces) == 1


def test_signature_is_verified_before_the_nonce_is_spent(auth: Authenticator, clock: FakeClock) -> None:
    forged = headers(clock, "victim", secret="attacker-guess-0123456789")
    with pytest.raises(AuthFailure) as caught:
        check(auth, forged)
    assert caught.value.reason == "bad_signature"
    assert len(auth.nonces) == 0
    check(auth, headers(clock, "victim"))


def test_the_nonce_table_is_bounded_and_fails_closed(clock: FakeClock) -> None:
    nonces = NonceStore(TTL, clock, max_entries=3)
    auth = Authenticator(None, SECRET, TTL, clock, nonces)
    for i in range(3):
        check(auth, headers(clock, f"n{i}"))
    with pytest.raises(AuthFailure) as caught:
        check(auth, headers(clock, "n3"))
    assert (caught.value.reason, caught.value.status) == ("nonce_table_full", 503)
    clock.advance(TTL + 1)
    check(auth, headers(clock, "n3"))  # expired entries made room


def test_nonces_survive_a_clean_restart(tmp_path: Path, clock: FakeClock) -> None:
    first = NonceStore(TTL, clock)
    first.load(str(tmp_path))
    assert first.not_before == clock.time()  # no saved table: older signatures are refused
    clock.advance(TTL * 3)
    auth = Authenticator(None, SECRET, TTL, clock, first)
    hdrs = headers(clock, "kept")
    check(auth, hdrs)
    first.save(str(tmp_path))
    saved = json.loads((tmp_path / NONCE_FILE).read_text())
    assert saved["not_before"] is None  # the crash it guarded against is long out of the window
    clock.advance(5)
    second = NonceStore(TTL, clock)
    second.load(str(tmp_path))
    assert not (tmp_path / NONCE_FILE).exists()  # taken over and removed: a later crash cannot bring it back
    assert second.not_before is None
    with pytest.raises(AuthFailure) as caught:
        check(Authenticator(None, SECRET, TTL, clock, second), hdrs)
    assert caught.value.reason == "replayed_nonce"


def test_after_a_crash_signatures_from_before_the_start_are_refused(tmp_path: Path, clock: FakeClock) -> None:
    captured = headers(clock, "captured")  # signed (and accepted) by a process that then crashed
    clock.advance(2)
    store = NonceStore(TTL, clock)
    store.load(str(tmp_path))  # no table: the last stop was not clean
    auth = Authenticator(None, SECRET, TTL, clock, store)
    with pytest.raises(AuthFailure) as caught:
        check(auth, captured)
    assert caught.value.reason == "before_start"
    check(auth, headers(clock, "fresh"))
    # A clean restart soon after keeps the rule while it matters.
    store.save(str(tmp_path))
    again = NonceStore(TTL, clock)
    again.load(str(tmp_path))
    with pytest.raises(AuthFailure):
        check(Authenticator(None, SECRET, TTL, clock, again), captured)


def test_a_store_that_never_loaded_saves_nothing(tmp_path: Path, clock: FakeClock) -> None:
    NonceStore(TTL, clock).save(str(tmp_path))
    assert not (tmp_path / NONCE_FILE).exists()


def test_token_compare_and_fail_closed(clock: FakeClock) -> None:
    auth = Authenticator("the-token-0123456789", None, TTL, clock, NonceStore(TTL, clock))
    assert auth.before_body({b"authorization": b"Bearer the-token-0123456789"}) is None
    assert auth.before_body({b"authorization": b"bearer   the-token-0123456789  "}) is None
    for value, reason in (
        (None, "missing_token"),
        (b"Bearer", "missing_token"),
        (b"Token the-token-0123456789", "missing_token"),
        (b"Bearer the-token-012345678", "bad_token"),
        (b"Bearer the-token-0123456789x", "bad_token"),
    ):
        with pytest.raises(AuthFailure) as caught:
            auth.before_body({} if value is None else {b"authorization": value})
        assert caught.value.reason == reason
        assert "the-token" not in caught.value.message
    nothing = Authenticator(None, None, TTL, clock, NonceStore(TTL, clock))
    with pytest.raises(AuthFailure) as caught:
        nothing.before_body({b"authorization": b"Bearer anything"})
    assert (caught.value.status, caught.value.reason) == (403, "not_configured")


def test_token_bucket_refills_and_says_when(clock: FakeClock) -> None:
    limiter = RateLimiter(60, clock)  # one a second, bursts of 60
    assert [limiter.retry_after("a") for _ in range(60)] == [None] * 60
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") is None  # another client has its own bucket
    clock.advance(0.5)
    assert limiter.retry_after("a") == 1  # half a token: wait the other half, rounded up
    clock.advance(0.6)
    assert limiter.retry_after("a") is None
    slow = RateLimiter(2, clock)
    assert [slow.retry_after("c"), slow.retry_after("c")] == [None, None]
    assert slow.retry_after("c") == 30
    clock.advance(3600)
    assert [slow.retry_after("c"), slow.retry_after("c"), slow.retry_after("c")] == [None, None, 30]  # capped
    assert RateLimiter(0, clock).retry_after("c") is None


def test_bucket_table_is_bounded(clock: FakeClock) -> None:
    limiter = RateLimiter(1, clock, max_buckets=100)
    for i in range(1000):
        limiter.retry_after(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("192.0.2.7", 5555), "192.0.2.7"),
        (("2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 1), "2001:db8:1:2::/64"),
        (("::ffff:192.0.2.9", 1), "192.0.2.9"),
        (None, "unix"),
    ],
)
def test_bucket_keys(client: tuple[str, int] | None, key: str) -> None:
    assert client_key(client) == key

"""Request authentication of DESIGN.md section 4: bearer token, HMAC signature, or both.

* Nothing configured: every endpoint but ``/health`` answers 403 (fail closed).
* ``MACHINA_API_TOKEN``: ``Authorization: Bearer <token>``.
* ``MACHINA_API_HMAC_SECRET``: ``X-Machina-Ts`` (unix seconds), ``X-Machina-Nonce``,
  ``X-Machina-Signature: v1=<hex>`` where ``hex = HMAC_SHA256(secret, ts "\\n" nonce "\\n" METHOD "\\n"
  path_with_query "\\n" hex(SHA256(body)) "\\n")``; ``|now - ts| <= MACHINA_API_HMAC_TTL_SEC``; the nonce
  is recorded only once the signature verifies, so an unsigned or badly signed request cannot burn it.
* Both configured: both are required.

Checks that need no body run first (:meth:`Authenticator.before_body`), so a client without credentials
is turned away before it can make the server read a body; the signature itself covers the body
(:meth:`Authenticator.after_body`).  Every comparison of secret material is constant-time.  A failure
carries a short ``reason`` (the metrics label) and a message for the client that never echoes a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from machina.clock import Clock
from machina.enqueued.nonces import NonceStore

TS_HEADER = b"x-machina-ts"
NONCE_HEADER = b"x-machina-nonce"
SIGNATURE_HEADER = b"x-machina-signature"
AUTHORIZATION_HEADER = b"authorization"

_TS_RE = re.compile(r"[0-9]{1,12}")
_NONCE_RE = re.compile(r"[\x21-\x7e]{1,128}")
_SIGNATURE_RE = re.compile(r"v1=([0-9a-fA-F]{64})")
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

#: Every reason a request can be refused (the ``reason`` label of machina_auth_failures_total).
REASONS = (
    "not_configured",
    "missing_token",
    "bad_token",
    "missing_signature",
    "bad_timestamp",
    "bad_nonce",
    "expired",
    "future",
    "before_start",
    "bad_signature",
    "replayed_nonce",
    "nonce_table_full",
)


class AuthFailure(Exception):
    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def signature_base(ts: str, nonce: str, method: str, target: str, body_sha256: str) -> bytes:
    """The signed string of DESIGN.md section 4 (``target`` is the path with its query)."""
    return f"{ts}\n{nonce}\n{method}\n{target}\n{body_sha256}\n".encode()


def sign(secret: str, ts: str, nonce: str, method: str, target: str, body: bytes) -> str:
    """The ``X-Machina-Signature`` value a client sends (tests, benchmarks and clients use this)."""
    base = signature_base(ts, nonce, method, target, hashlib.sha256(body).hexdigest())
    return "v1=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class PendingSignature:
    """The signature headers of a request whose body is still to come."""

    ts: int
    ts_text: str
    nonce: str
    signature: str  #: lowercase hex


class Authenticator:
    def __init__(
        self, token: str | None, hmac_secret: str | None, ttl_s: int, clock: Clock, nonces: NonceStore
    ) -> None:
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        self._secret = hmac_secret.encode() if hmac_secret else None
        self.ttl_s = ttl_s
        self.clock = clock
        self.nonces = nonces

    @property
    def configured(self) -> bool:
        return self._token_digest is not None or self._secret is not None

    @property
    def needs_body(self) -> bool:
        """True when the signature (over the body) must be checked after the body is read."""
        return self._secret is not None

    def before_body(self, headers: Mapping[bytes, bytes]) -> PendingSignature | None:
        """Checks that need no body; raises AuthFailure.  Returns the signature to verify, if HMAC is on."""
        if not self.configured:
            raise AuthFailure(
                "not_configured",
                "authentication is not configured on this server (MACHINA_API_TOKEN or MACHINA_API_HMAC_SECRET)",
                403,
            )
        if self._token_digest is not None:
            self._check_token(headers.get(AUTHORIZATION_HEADER))
        if self._secret is None:
            return None
        return self._signature_headers(headers)

    def after_body(self, pending: PendingSignature | None, method: str, target: str, body: bytes) -> None:
        """Verify the signature over the request, then spend its nonce.  Raises AuthFailure."""
        if self._secret is None or pending is None:
            return
        body_sha = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
        base = signature_base(pending.ts_text, pending.nonce, method, target, body_sha)
        expected = hmac.new(self._secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), pending.signature.encode()):
            raise AuthFailure("bad_signature", "invalid request signature")
        refused = self.nonces.use(pending.nonce, pending.ts)
        if refused == "replayed":
            raise AuthFailure("replayed_nonce", "nonce already used (sign each request with a fresh nonce)")
        if refused is not None:
            raise AuthFailure("nonce_table_full", "too many signed requests in flight; try again later", 503)

    def _check_token(self, header: bytes | None) -> None:
        scheme, _, value = (header or b"").decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthFailure("missing_token", "missing token (Authorization: Bearer <token>)")
        given = hashlib.sha256(value.strip().encode("latin-1")).digest()
        assert self._token_digest is not None
        if not hmac.compare_digest(given, self._token_digest):
            raise AuthFailure("bad_token", "invalid token")

    def _signature_headers(self, headers: Mapping[bytes, bytes]) -> PendingSignature:
        raw_ts, raw_nonce, raw_sig = (headers.get(h) for h in (TS_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
        if raw_ts is None or raw_nonce is None or raw_sig is None:
            raise AuthFailure(
                "missing_signature", "missing request signature (X-Machina-Ts, X-Machina-Nonce, X-Machina-Signature)"
            )
        ts_text, nonce, sig_text = (v.decode("latin-1").strip() for v in (raw_ts, raw_nonce, raw_sig))
        if not _TS_RE.fullmatch(ts_text):
            raise AuthFailure("bad_timestamp", "X-Machina-Ts must be unix seconds")
        if not _NONCE_RE.fullmatch(nonce):
            raise AuthFailure("bad_nonce", "X-Machina-Nonce must be 1 to 128 printable ASCII characters")
        match = _SIGNATURE_RE.fullmatch(sig_text)
        if match is None:
            raise AuthFailure("bad_signature", "X-Machina-Signature must be v1=<64 hex digits>")
        ts = int(ts_text)
        now = self.clock.time()
        if now - ts > self.ttl_s:
            raise AuthFailure("expired", f"request signature expired (X-Machina-Ts older than {self.ttl_s} s)")
        if ts - now > self.ttl_s:
            raise AuthFailure("future", f"X-Machina-Ts is more than {self.ttl_s} s in the future (check the clock)")
        not_before = self.nonces.not_before
        if not_before is not None and ts < int(not_before):
            raise AuthFailure("before_start", "request signed before this server started; sign it again")
        return PendingSignature(ts, ts_text, nonce, match.group(1).lower())

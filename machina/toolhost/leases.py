"""Single-use permission leases, kept in ``state/toolhost/leases.json`` so they survive a restart.

A lease lets exactly one call of one tool (or of any tool, ``*``) up to a tier run before it expires.  The
token handed out is ``mlease_<id>_<secret>``; only SHA-256(secret) is stored, and it is compared in
constant time.  A lease is spent (and the file rewritten, fsynced) *before* the tool runs, so a crash
cannot make it usable twice.  A lease presented for the wrong tool or too low a tier is refused and kept.

A lease may also be bound to one call: issued with ``inputs_digest`` (:func:`inputs_digest` of the AID and
its inputs), it approves only a call whose AID and inputs give that digest; any other call is refused and
the lease kept.  A human's "yes" to ``ls`` then cannot become a later ``rm``.

Only administrative peers issue or collect leases (the toolhost checks; see machina.toolhost.service).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from typing import Any

from machina.audit.canonical import digest
from machina.clock import SYSTEM_CLOCK, Clock
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)

TOKEN_PREFIX = "mlease_"  # noqa: S105 - a prefix, not a secret
DIGEST_HEX_CHARS = 64


def inputs_digest(aid: str, inputs: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``{"aid": aid, "inputs": inputs}``: what binds a lease to one call.

    ValueError for inputs with no canonical form (NaN, infinities), TypeError for non-JSON values.
    """
    return digest({"aid": aid, "inputs": inputs})


def is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == DIGEST_HEX_CHARS and all(c in "0123456789abcdef" for c in value)


class LeaseError(MachinaError):
    exit_code = ExitCode.NOPERM


@dataclass(frozen=True)
class Lease:
    lease_id: str
    secret_sha256: str
    aid: str  # an exact AID or "*"
    tier: int
    issued_at: float
    expires_at: float
    issued_by: int  # peer uid
    inputs_digest: str | None = None  # set: the lease approves only the call with this inputs_digest()

    def public(self) -> dict[str, object]:
        return {
            "lease_id": self.lease_id,
            "aid": self.aid,
            "tier": self.tier,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "issued_by": self.issued_by,
            "inputs_digest": self.inputs_digest,
        }

    def covers_inputs(self, aid: str, inputs: dict[str, Any] | None) -> bool:
        if self.inputs_digest is None:
            return True
        if inputs is None:
            return False
        try:
            presented = inputs_digest(aid, inputs)
        except (TypeError, ValueError):
            return False
        return hmac.compare_digest(presented, self.inputs_digest)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class LeaseStore:
    def __init__(self, path: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}

    def load(self) -> None:
        """Read the persisted leases; an unreadable file is set aside and every lease in it is void."""
        ensure_dir(os.path.dirname(self.path))
        try:
            with open(self.path, encoding="utf-8") as handle:
                doc = json.load(handle)
            leases = {item["lease_id"]: Lease(**item) for item in doc["leases"]}
        except FileNotFoundError:
            leases = {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = f"{self.path}.corrupt"
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("lease file %s is unreadable (%s): moved to %s; no lease from it is valid", self.path, exc, aside)
            leases = {}
        with self._lock:
            self._leases = leases

    def _save(self) -> None:
        body = {"version": 1, "leases": [asdict(lease) for lease in self._leases.values()]}
        write_atomic(self.path, json.dumps(body, sort_keys=True).encode(), fsync=True)

    def issue(
        self, aid: str, tier: int, ttl_ms: int, issued_by: int, inputs_digest: str | None = None
    ) -> tuple[str, Lease]:
        """A new lease and its token; ``inputs_digest`` binds it to the one call with that digest."""
        if inputs_digest is not None and not is_digest(inputs_digest):
            raise LeaseError("inputs_digest must be 64 lowercase hex digits")
        lease_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = self.clock.time()
        lease = Lease(lease_id, _hash(secret), aid, tier, now, now + ttl_ms / 1000.0, issued_by, inputs_digest)
        with self._lock:
            self._leases[lease_id] = lease
            self._save()
        return f"{TOKEN_PREFIX}{lease_id}_{secret}", lease

    def consume(self, token: str, aid: str, tier: int, inputs: dict[str, Any] | None = None) -> Lease:
        """Spend the lease ``token`` for one call of ``aid`` (tier ``tier``) with ``inputs``; LeaseError says why not.

        A lease bound to one call (issued with an inputs digest) is refused, and kept, for any other inputs.
        """
        lease_id, secret = _split(token)
        with self._lock:
            lease = self._leases.get(lease_id)
            # One message for "no such lease" and "wrong secret": no oracle for guessing ids.
            if lease is None or not hmac.compare_digest(_hash(secret), lease.secret_sha256):
                raise LeaseError("unknown or already used lease")
            if self.clock.time() >= lease.expires_at:
                del self._leases[lease_id]
                self._save()
                raise LeaseError("lease expired")
            if lease.aid not in ("*", aid):
                raise LeaseError(f"lease is for {lease.aid}, not {aid}")
            if tier > lease.tier:
                raise LeaseError(f"lease covers tier {lease.tier}; {aid} is tier {tier}")
            if not lease.covers_inputs(aid, inputs):
                raise LeaseError(f"lease is for one call of {lease.aid} with other inputs")
            del self._leases[lease_id]
            self._save()
        return lease

    def gc(self) -> int:
        """Remove expired leases; how many."""
        now = self.clock.time()
        with self._lock:
            expired = [k for k, lease in self._leases.items() if now >= lease.expires_at]
            for key in expired:
                del self._leases[key]
            if expired:
                self._save()
        return len(expired)

    def count(self) -> int:
        with self._lock:
            return len(self._leases)


def _split(token: object) -> tuple[str, str]:
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX):
        raise LeaseError("not a lease token")
    lease_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not lease_id or not secret:
        raise LeaseError("not a lease token")
    return lease_id, secret

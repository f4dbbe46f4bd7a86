"""The hash chain of a run log.

Every record carries ``chain_prev`` (the previous record's hash; 64 zeros for the first) and
``chain_hash``, computed over the previous hash and the record without its own hash::

    chain_hash = H(chain_prev + "\\n" + canonical(record minus chain_hash))

``H`` is SHA-256, or HMAC-SHA256 keyed with MACHINA_AUDIT_KEY when one is set.  Plain SHA-256 detects
accidental damage and edits made without recomputing the chain; only the keyed form stops someone who can
rewrite the file from recomputing it.  The first record names the algorithm and a key id (an HMAC of a
fixed label, so it says "which key" without helping to guess it) so that a wrong key is told apart from a
tampered log.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from machina.audit.canonical import canonical

GENESIS = "0" * 64
HASH_KEY = "chain_hash"
ALG_SHA256 = "sha256"
ALG_HMAC = "hmac-sha256"
_KEY_ID_LABEL = b"machina-audit-key-id-v1"


class Chain:
    """Computes chain hashes for one algorithm (and key)."""

    def __init__(self, key: str | bytes | None = None) -> None:
        if isinstance(key, str):
            key = key.encode()
        self._key = key or None

    @property
    def alg(self) -> str:
        return ALG_HMAC if self._key else ALG_SHA256

    @property
    def key_id(self) -> str | None:
        if self._key is None:
            return None
        return hmac.new(self._key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def hash(self, prev: str, record: dict[str, Any]) -> str:
        """The chain hash of ``record`` (which holds ``chain_prev`` and no ``chain_hash``)."""
        return self._hash_canonical(prev, canonical(record))

    def _hash_canonical(self, prev: str, body: bytes) -> str:
        message = prev.encode() + b"\n" + body
        if self._key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def seal(self, prev: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with ``chain_prev`` and ``chain_hash`` filled in."""
        sealed = dict(record, chain_prev=prev)
        sealed[HASH_KEY] = self.hash(prev, sealed)
        return sealed

    def seal_line(self, prev: str, record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """:meth:`seal`, and the sealed record's canonical bytes, encoding the record once instead of twice
        (a run log writes one such line per event, on every job's path).

        Keys are sorted in the canonical form, so the sealed record's bytes are the hashed body's with the
        ``"chain_hash"`` member put between the keys that sort before it and those after.  Each half is
        encoded on its own; their members joined are the body's members.
        """
        if HASH_KEY in record:  # not a record a writer makes; keep seal()'s meaning exactly
            sealed = self.seal(prev, record)
            return sealed, canonical(sealed)
        body = dict(record, chain_prev=prev)
        head = canonical({k: v for k, v in body.items() if k < HASH_KEY})[1:-1]
        tail = canonical({k: v for k, v in body.items() if k > HASH_KEY})[1:-1]  # holds chain_prev
        joint = b"," if head else b""
        chain_hash = self._hash_canonical(prev, b"{" + head + joint + tail + b"}")
        member = b'"' + HASH_KEY.encode() + b'":"' + chain_hash.encode() + b'",'
        body[HASH_KEY] = chain_hash
        return body, b"{" + head + joint + member + tail + b"}"

    def check(self, prev: str, sealed: dict[str, Any]) -> bool:
        """Whether ``sealed`` follows ``prev`` and its hash is right (constant-time compare)."""
        body = {k: v for k, v in sealed.items() if k != HASH_KEY}
        claimed = sealed.get(HASH_KEY)
        if not isinstance(claimed, str) or not hmac.compare_digest(str(body.get("chain_prev")), prev):
            return False
        return hmac.compare_digest(claimed, self.hash(prev, body))

"""Idempotency keys: a repeated ``idempotency_key`` within its TTL gets the first reply, without a rerun.

Keys are scoped to the calling uid and bound to the call (AID and inputs): the same key for a different
call is refused rather than answered with someone else's result.  A repeat that arrives while the first
call still runs waits for it.  Only replies of calls that ran are kept (ok, tool_error, timeout); a call
refused before running (denied, approval or lease required, bad input) can be retried with the same key.

The table lives in memory (bounded, MACHINA_TOOLHOST_IDEMPOTENCY_TTL_MS): a toolhost restart forgets it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock

MAX_ENTRIES = 10_000


def fingerprint(aid: str, inputs: Any) -> str:
    body = json.dumps([aid, inputs], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    expires: float = float("inf")


class Mismatch(Exception):
    """The key was used for a different call."""


class IdempotencyCache:
    def __init__(self, ttl_ms: int, clock: Clock = SYSTEM_CLOCK, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_ms / 1000.0
        self.clock = clock
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[tuple[int, str], _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()

    def begin(self, uid: int, key: str, print_: str, wait_s: float) -> dict[str, Any] | None:
        """The stored reply of an earlier identical call, or None: then run it and call :meth:`finish`.

        Raises Mismatch when the key belongs to a different call.
        """
        while True:
            with self._lock:
                self._expire()
                entry = self._entries.get((uid, key))
                if entry is None:
                    self._entries[(uid, key)] = _Entry(print_)
                    return None
                if entry.fingerprint != print_:
                    raise Mismatch("idempotency_key was already used for a different call")
                if entry.reply is not None:
                    return entry.reply
                event = entry.done
            if not event.wait(wait_s):
                return None  # the first call is stuck; run this one rather than wait forever

    def finish(self, uid: int, key: str, reply: dict[str, Any], keep: bool) -> None:
        with self._lock:
            entry = self._entries.get((uid, key))
            if entry is None:
                return
            if keep and self.ttl_s > 0:
                entry.reply = reply
                entry.expires = self.clock.monotonic() + self.ttl_s
            else:
                del self._entries[(uid, key)]
            entry.done.set()
            while len(self._entries) > self.max_entries:
                _, oldest = self._entries.popitem(last=False)
                oldest.done.set()

    def _expire(self) -> None:
        """Drop expired replies from the front (entries are kept in the order their calls began)."""
        now = self.clock.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.reply is None or entry.expires > now:
                return
            del self._entries[key]

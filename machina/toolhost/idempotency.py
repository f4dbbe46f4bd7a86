"""Idempotency keys: a repeated ``idempotency_key`` within its TTL gets the first reply, without a rerun.

Keys are scoped to the calling uid and bound to the call (AID and inputs): the same key for a different
call is refused rather than answered with someone else's result.  A repeat that arrives while the first
call still runs waits for it, and never runs the call a second time: when the first is still running after
the wait, the repeat is told so (:class:`InFlight`).  An entry in flight is never evicted.  Only replies of
calls that ran are kept (ok, tool_error, timeout); a call refused before running (denied, approval or
lease required, bad input) can be retried with the same key.

The table lives in memory (bounded, MACHINA_TOOLHOST_IDEMPOTENCY_TTL_MS): a toolhost restart forgets it.
"""

from __future__ import annotations

import collections
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from machina.audit.canonical import digest
from machina.clock import SYSTEM_CLOCK, Clock

MAX_ENTRIES = 10_000


def fingerprint(aid: str, inputs: Any) -> str:
    return digest([aid, inputs])


@dataclass
class _Entry:
    fingerprint: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None
    expires: float = float("inf")


class Mismatch(Exception):
    """The key was used for a different call."""


class InFlight(Exception):
    """The first call with this key is still running after the wait: the repeat must not run it again."""


class IdempotencyCache:
    def __init__(self, ttl_ms: int, clock: Clock = SYSTEM_CLOCK, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_ms / 1000.0
        self.clock = clock
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[tuple[int, str], _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()

    def begin(self, uid: int, key: str, print_: str, wait_s: float) -> dict[str, Any] | None:
        """The stored reply of an earlier identical call, or None: then run it and call :meth:`finish`.

        Raises Mismatch when the key belongs to a different call, InFlight when the first call with it is
        still running after ``wait_s``.
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
                raise InFlight(f"the call with this idempotency_key is still running after {wait_s:g} s")

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
            self._evict()

    def _evict(self) -> None:
        """Keep at most max_entries, dropping the oldest finished ones (called with the lock held).  A call in
        flight keeps its entry: dropping it would let a repeat run the call a second time."""
        excess = len(self._entries) - self.max_entries
        if excess <= 0:
            return
        # Lazily, oldest first: the oldest entries are almost always finished, so this looks at about
        # ``excess`` of them.  A full pass here ran on every call once the table was full (10,000 entries
        # after ten seconds at 1,000 calls/s and the default TTL) and cost 0.8 ms a call.
        finished = list(itertools.islice((k for k, e in self._entries.items() if e.reply is not None), excess))
        for key in finished:
            del self._entries[key]

    def _expire(self) -> None:
        """Drop expired replies from the front (entries are kept in the order their calls began)."""
        now = self.clock.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.reply is None or entry.expires > now:
                return
            del self._entries[key]

"""HMAC nonces seen within the timestamp window, so a signed request is accepted once.

A nonce is kept until ``ts + ttl``: after that, any request carrying its timestamp is outside the window
anyway, so forgetting it opens no replay.  The table is bounded (:data:`MAX_NONCES`); when it is full a
new signed request is refused rather than accepted unrecorded (fail closed).

**Across a restart.**  The table lives in memory.  On a clean stop it is written to
``$MACHINA_ROOT/state/enqueued-nonces.json`` and read back (and removed, durably) at the next start, so
routine restarts neither reopen replays nor disturb clients.  When that file is missing at start (first
start, or the previous process crashed, so nonces it accepted since are unknown) the store refuses every
signature dated before this process started: a request captured before the crash cannot be replayed
after it, at the price of making a client with a lagging clock sign again after such a start.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import threading

from machina.clock import Clock
from machina.fsutil import fsync_dir, write_atomic

log = logging.getLogger(__name__)

MAX_NONCES = 1_000_000
NONCE_FILE = "enqueued-nonces.json"


class NonceStore:
    """Thread-safe; ``use`` is the one operation on the request path."""

    def __init__(self, ttl_s: int, clock: Clock, max_entries: int = MAX_NONCES) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        #: Signatures dated before this are refused (set by :meth:`load` when no saved table exists, and
        #: carried over clean restarts while it matters).
        self.not_before: float | None = None
        self.loaded = False

    def __len__(self) -> int:
        return len(self._expiry)

    def use(self, nonce: str, ts: int) -> str | None:
        """Record ``nonce`` (of a verified request with timestamp ``ts``); None when accepted, else why not."""
        now = self.clock.time()
        with self._lock:
            self._prune(now)
            if nonce in self._expiry:
                return "replayed"
            if len(self._expiry) >= self.max_entries:
                return "full"
            expiry = ts + self.ttl_s
            self._expiry[nonce] = expiry
            heapq.heappush(self._heap, (expiry, nonce))
        return None

    def _prune(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            expiry, nonce = heapq.heappop(heap)
            if self._expiry.get(nonce) == expiry:
                del self._expiry[nonce]

    # --- persistence across a clean restart -----------------------------------------------------------

    def load(self, state_dir: str) -> None:
        """Take over the table a clean stop saved (then remove it), or refuse signatures older than now."""
        path = os.path.join(state_dir, NONCE_FILE)
        saved: dict[str, float] | None = None
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
            saved = {str(k): float(v) for k, v in doc["nonces"].items()}
            not_before = doc.get("not_before")
            self.not_before = None if not_before is None else float(not_before)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("unreadable nonce table %s (%s): treating the last stop as a crash", path, exc)
        if saved is None:
            self.not_before = self.clock.time()
            self.loaded = True
            log.info("no nonce table from a clean stop: signatures dated before now are refused")
        else:
            now = self.clock.time()
            with self._lock:
                for nonce, expiry in saved.items():
                    if expiry >= now:
                        self._expiry[nonce] = expiry
                        self._heap.append((expiry, nonce))
                heapq.heapify(self._heap)
            self.loaded = True
            log.info("took over %d nonces from the last clean stop", len(self._expiry))
        # The file must not outlive this process's first accepted nonce: a crash later would otherwise
        # bring back a stale table on the next start.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            fsync_dir(state_dir)

    def save(self, state_dir: str) -> None:
        """Write the live table for the next start (clean stop only; nothing when :meth:`load` never ran,
        since the table would then lack what an earlier, crashed process accepted)."""
        if not self.loaded:
            return
        now = self.clock.time()
        not_before = self.not_before
        if not_before is not None and now - not_before > 2 * self.ttl_s:
            not_before = None  # every signature that old is expired anyway
        with self._lock:
            self._prune(now)
            doc = {"saved_at": now, "not_before": not_before, "nonces": dict(self._expiry)}
        write_atomic(os.path.join(state_dir, NONCE_FILE), json.dumps(doc).encode(), fsync=True)

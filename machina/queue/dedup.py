"""request_id dedup: ``request_id -> (first job name, SHA-256 of the canonical body, time)`` for
``MACHINA_DEDUP_TTL_MS``.

Three layers, looked up in order:

* *pending*: a request with this id is being enqueued by another thread right now; wait for it (so two
  concurrent copies of one request make one job, and a copy is never told "queued" for a job that then
  failed to be written);
* *recent*: ids this process enqueued (exact, immediately);
* the :class:`~machina.queue.walindex.WalIndex`: ids from the checkpoint and every process's WAL segment,
  refreshed at most every ``refresh_s`` when an id is not found locally.

Persistence is the WAL's ENQ record (it carries ``rid`` and ``sha``) and the checkpoint.  Limits, stated
plainly: within one process (machina-enqueued) dedup is exact; between processes (the daemon and a
``machina enqueue --request-id`` run at the same moment) an id is seen once the other process's WAL
record has been read, so two copies sent to two processes within ``refresh_s`` can both be queued.  With
``MACHINA_WAL_ENABLE=0`` the table lives in memory only.  ``MACHINA_DEDUP_TTL_MS=0`` turns dedup off.
"""

from __future__ import annotations

import logging
import threading
import time

from machina.queue.errors import DedupPending
from machina.queue.walindex import DedupEntry, WalIndex

log = logging.getLogger(__name__)

#: How long a copy of a request waits for the first copy, still being written, before giving up (DedupPending).
PENDING_WAIT_S = 30.0


class Reservation:
    """A claim on a request_id while its job is being written.

    Its Event is made only when a copy of the request comes to wait (rare), not for every enqueue; both
    that and the wake-up happen under the table's lock, so no waiter can miss the end."""

    def __init__(self, sha256: str) -> None:
        self.sha256 = sha256
        self._done: threading.Event | None = None

    def waiter(self) -> threading.Event:
        """Called with the table's lock held."""
        if self._done is None:
            self._done = threading.Event()
        return self._done

    @property
    def waited_on(self) -> threading.Event | None:
        """Read with the table's lock held: the Event to set once the lock is released, if anyone waits."""
        return self._done


class DedupTable:
    def __init__(
        self, ttl_ms: int, index: WalIndex | None, refresh_s: float, pending_wait_s: float = PENDING_WAIT_S
    ) -> None:
        self.ttl_ms = ttl_ms
        self.pending_wait_s = pending_wait_s
        self.index = index
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._pending: dict[str, Reservation] = {}
        self._recent: dict[str, DedupEntry] = {}
        self._refreshed_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.ttl_ms > 0

    def begin(self, rid: str, sha256: str, now_ms: int) -> DedupEntry | Reservation:
        """The live entry for ``rid``, or a Reservation the caller must ``finish`` or ``abort``.

        Raises DedupPending when another copy has been being written for longer than ``pending_wait_s``
        (a stuck disk must not pile up every copy's thread behind it)."""
        deadline = time.monotonic() + self.pending_wait_s
        while True:
            with self._lock:
                local = self._local(rid, now_ms)
                done = local.waiter() if isinstance(local, Reservation) else None
            if done is not None:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    raise DedupPending(rid, self.pending_wait_s)
                continue
            if local is not None:
                return local
            found = self._from_index(rid, now_ms)
            with self._lock:
                if rid in self._pending or self._local(rid, now_ms) is not None:
                    continue  # someone got there while we looked
                if found is not None:
                    return found
                reservation = Reservation(sha256)
                self._pending[rid] = reservation
                return reservation

    def finish(self, rid: str, reservation: Reservation, name: str, ts_ms: int) -> None:
        with self._lock:
            self._pending.pop(rid, None)
            self._recent[rid] = DedupEntry(name, reservation.sha256, ts_ms)
            done = reservation.waited_on
        if done is not None:
            done.set()

    def abort(self, rid: str, reservation: Reservation) -> None:
        with self._lock:
            self._pending.pop(rid, None)
            done = reservation.waited_on
        if done is not None:
            done.set()

    def prune(self, now_ms: int) -> None:
        """Forget expired entries, and recent ones the index has caught up with."""
        index_entries = self.index.entries if self.index is not None and self.index.loaded else {}
        with self._lock:
            for rid in list(self._recent):
                entry = self._recent[rid]
                if now_ms - entry.ts_ms > self.ttl_ms or index_entries.get(rid) == entry:
                    del self._recent[rid]
        if self.index is not None:
            self.index.prune(now_ms)

    def _local(self, rid: str, now_ms: int) -> DedupEntry | Reservation | None:
        pending = self._pending.get(rid)
        if pending is not None:
            return pending
        entry = self._recent.get(rid)
        if entry is not None and now_ms - entry.ts_ms > self.ttl_ms:
            del self._recent[rid]
            return None
        return entry

    def _from_index(self, rid: str, now_ms: int) -> DedupEntry | None:
        if self.index is None:
            return None
        now = time.monotonic()
        if not self.index.loaded or now - self._refreshed_at >= self.refresh_s:
            self._refreshed_at = now
            try:
                self.index.refresh()
            except OSError as exc:  # the WAL is an aid: an unreadable one must not stop enqueues
                log.warning("cannot read the WAL for dedup entries (%s); using what is known", exc)
        return self.index.lookup(rid, now_ms)

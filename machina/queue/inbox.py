"""The inbox as a worker sees it: candidates in claim order, and a wake-up when a job arrives.

:class:`InboxIndex` keeps the inbox's file names in a heap (names sort in claim order, see
:mod:`machina.queue.names`).  A full scan fills it at start; after that an inotify watcher thread adds and
removes names as files move in and out, and wakes every thread waiting in ``claim`` within milliseconds.
An entry can be stale (another worker claimed it): the claim's ``rename`` then fails and the next
candidate is tried, so the index never needs to be exact, only complete.  It is made complete again by a
rescan on inotify queue overflow, whenever the index runs dry and the last scan is older than
``MACHINA_SERVE_SCAN_MS``, and, without inotify, every ``MACHINA_SERVE_SCAN_MS`` (spaced out further when
the inbox is so large that a scan is expensive).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import select
import threading
import time

from machina.queue.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    open_inotify,
)
from machina.queue.names import is_candidate

log = logging.getLogger(__name__)

_INBOX_MASK = IN_MOVED_TO | IN_CREATE | IN_MOVED_FROM | IN_DELETE
_RETRY_MASK = IN_MOVED_TO | IN_CREATE
_ADDED = IN_MOVED_TO | IN_CREATE
_RESCAN = IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF


class InboxIndex:
    def __init__(self, inbox_dir: str, retry_dir: str, scan_s: float) -> None:
        self.inbox_dir = inbox_dir
        self.retry_dir = retry_dir
        self.scan_s = scan_s
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[str] = []
        self._present: set[str] = set()
        self._stale = True
        self._scanned_at = float("-inf")
        self._scan_cost = 0.0
        self.retry_changed = True
        self.scans = 0
        self._watcher: _Watcher | None = None

    @property
    def watching(self) -> bool:
        return self._watcher is not None and self._watcher.is_alive()

    def start_watching(self) -> bool:
        """Start the inotify thread (idempotent); False when inotify is unavailable."""
        with self._cond:
            if self._watcher is not None:
                return self.watching
            ino = open_inotify()
            if ino is None:
                self._watcher = _Watcher(self, None, -1, -1)  # marks "tried"; never started
                return False
            try:
                inbox_wd = ino.add_watch(self.inbox_dir, _INBOX_MASK)
                retry_wd = ino.add_watch(self.retry_dir, _RETRY_MASK)
            except OSError as exc:
                log.warning("inotify watch failed (%s): falling back to rescans", exc)
                ino.close()
                self._watcher = _Watcher(self, None, -1, -1)
                return False
            self._watcher = _Watcher(self, ino, inbox_wd, retry_wd)
            self._stale = True  # anything that arrived before the watch
            self._watcher.start()
            return True

    def stop(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()

    def after_fork_in_child(self) -> None:
        """Let go of the parent's watcher: close our copies of its descriptors without waking it."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher.ino is not None:
            for fd in (watcher.ino.fd, watcher._wake_r, watcher._wake_w):
                if fd >= 0:  # -1: the watcher closed it already (a number it no longer owns)
                    with contextlib.suppress(OSError):
                        os.close(fd)
            watcher.ino.fd = -1
        self._watcher = _Watcher(self, None, -1, -1)  # "tried": this object never watches again
        self._cond = threading.Condition(threading.Lock())

    def pop(self) -> str | None:
        """The next candidate file name, or None when the inbox looks empty."""
        with self._cond:
            if self._rescan_due():
                self._rescan()
            while self._heap:
                name = heapq.heappop(self._heap)
                if name in self._present:
                    self._present.discard(name)
                    return name
            return None

    def push(self, name: str) -> None:
        """A file this process just put in the inbox: claimable at once, without waiting for its event.
        Ignored while no watcher runs (an enqueue-only process never pops, so must not collect names)."""
        if self._watcher is None:
            return
        with self._cond:
            if name not in self._present:
                self._present.add(name)
                heapq.heappush(self._heap, name)
            self._cond.notify()  # one name: one claimer (a claimer pops before it waits, so none is missed)

    def mark_stale(self) -> None:
        with self._cond:
            self._stale = True

    def wait(self, timeout: float) -> None:
        """Sleep until a job or a retry arrives, or ``timeout`` seconds pass."""
        with self._cond:
            if self._present and not self._stale:
                return
            self._cond.wait(max(0.0, timeout))

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _rescan_due(self) -> bool:
        if self._stale:
            return True
        age = time.monotonic() - self._scanned_at
        if self.watching:
            return not self._present and age >= self.scan_s
        return age >= max(self.scan_s, 20 * self._scan_cost)

    def _rescan(self) -> None:
        started = time.monotonic()
        with os.scandir(self.inbox_dir) as entries:
            names = [e.name for e in entries if is_candidate(e.name)]
        names.sort()  # a sorted list is a heap
        self._heap, self._present = names, set(names)
        self._stale = False
        self._scanned_at = time.monotonic()
        self._scan_cost = self._scanned_at - started
        self.scans += 1

    def _apply(self, events: list[tuple[int, int, str]], inbox_wd: int, retry_wd: int) -> None:
        added, everyone = 0, False
        with self._cond:
            for wd, mask, name in events:
                if mask & _RESCAN:
                    self._stale = True
                    self.retry_changed = everyone = True
                elif wd == retry_wd:
                    self.retry_changed = everyone = True  # whichever claimer wakes runs the maintenance
                elif wd == inbox_wd and is_candidate(name):
                    if mask & _ADDED:
                        if name not in self._present:
                            self._present.add(name)
                            heapq.heappush(self._heap, name)
                            added += 1
                    else:
                        self._present.discard(name)
            if len(self._heap) > 2 * len(self._present) + 1024:
                # Names claimed by others linger in the heap until popped: compact while this worker is busy.
                self._heap = sorted(self._present)
            # As many claimers as there are new names, not every idle one for each (nor any for the names
            # other workers took away): a claimer pops before it waits, so a name is never left unseen.
            if everyone:
                self._cond.notify_all()
            elif added:
                self._cond.notify(added)


class _Watcher(threading.Thread):
    def __init__(self, index: InboxIndex, ino: Inotify | None, inbox_wd: int, retry_wd: int) -> None:
        super().__init__(name="machina-queue-inotify", daemon=True)
        self.index = index
        self.ino = ino
        self.inbox_wd = inbox_wd
        self.retry_wd = retry_wd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK) if ino else (-1, -1)
        self._stopping = False

    def run(self) -> None:
        assert self.ino is not None
        try:
            while not self._stopping:
                readable, _, _ = select.select([self.ino.fd, self._wake_r], [], [])
                if self._wake_r in readable:
                    break
                events = self.ino.read_events()
                if events:
                    self.index._apply(events, self.inbox_wd, self.retry_wd)
        except (OSError, ValueError) as exc:
            if not self._stopping:
                log.warning("inotify watcher stopped (%s): falling back to rescans", exc)
                self.index.mark_stale()
        finally:
            self.ino.close()
            fd, self._wake_r = self._wake_r, -1  # forgotten before it is closed: see after_fork_in_child
            os.close(fd)

    def stop(self) -> None:
        if self.ino is None or self._stopping:
            return
        self._stopping = True
        fd, self._wake_w = self._wake_w, -1
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2)

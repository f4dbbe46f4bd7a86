"""Maintenance: due retries promoted, claims recovered, dedup pruned, the WAL replayed and checkpointed."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from machina.queue.errors import (
    QueueError,
)
from machina.queue.fscore import DEDUP_PRUNE_S, RECOVERY_SWEEP_S
from machina.queue.fsrecovery import RecoveryOps
from machina.queue.names import (
    parse_retry,
)
from machina.queue.walindex import VerifyReport, WalIndex

log = logging.getLogger(__name__)


class MaintenanceOps(RecoveryOps):
    """The periodic duties, each on the injected clock's cadence."""

    def maintain(self) -> None:
        if not self._maintain_lock.acquire(blocking=False):
            return
        try:
            now = self.clock.monotonic()
            self._duty("promote due retries", self._promote_due)
            if now - self._swept_at >= RECOVERY_SWEEP_S:
                self._duty("recover orphaned claims", self._sweep)
            if now - self._pruned_at >= DEDUP_PRUNE_S:
                # Always, not only with a checkpoint: with MACHINA_WAL_ENABLE=0 nothing else forgets an id.
                self._pruned_at = now
                self._duty("prune dedup entries", lambda: self._dedup.prune(self._now_ms()))
            if self._index is not None and now - self._checkpoint_checked_at >= self.config.checkpoint_ms / 1000:
                self._checkpoint_checked_at = now
                self._duty("checkpoint the WAL", self._checkpoint_if_due)
        finally:
            self._maintain_lock.release()

    def _duty(self, what: str, step: Callable[[], object]) -> None:
        """One maintenance step; its failure (a full disk, say) is logged and must not fail a claim."""
        try:
            step()
        except (OSError, QueueError) as exc:
            log.warning("could not %s: %s (will try again)", what, exc)

    def _checkpoint_if_due(self) -> None:
        if self._writer is not None:
            self._writer.check()
        if self._index is not None and self._index.checkpoint_due(self.config.checkpoint_ms):
            self.checkpoint()

    def start_maintenance(self) -> None:
        """Run :meth:`maintain` every MACHINA_SERVE_SCAN_MS in a background thread (for machina-enqueued,
        which claims nothing itself) after replaying the WAL.  Stopped by :meth:`close`."""
        if self._maintenance is not None:
            return
        self.replay()
        self._maintenance = threading.Thread(target=self._maintenance_loop, name="machina-queue-maint", daemon=True)
        self._maintenance.start()

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.config.scan_ms / 1000):
            try:
                self.maintain()
            except Exception:
                log.exception("queue maintenance failed; trying again in %d ms", self.config.scan_ms)

    def replay(self) -> None:
        """Load the checkpoint and the WAL now (cutting torn tails of dead writers' segments); otherwise this
        happens on first need (dedup, stats, checkpoint)."""
        if self._index is not None:
            self._index.refresh(repair=True)
            self._index.settle()

    def checkpoint(self) -> bool:
        """Write a WAL checkpoint now; False when WAL is off or another process is writing one."""
        if self._index is None:
            return False
        done = self._index.checkpoint()
        self._dedup.prune(self._now_ms())
        return done

    def verify_wal(self) -> VerifyReport:
        index = self._index or WalIndex(
            self.root.wal, clock=self.clock, ttl_ms=self.config.dedup_ttl_ms, fsync=False, writer=None
        )
        return index.verify()

    def _promote_due(self) -> None:
        now_ms = self._now_ms()
        due_known = self._retry_next_due is not None and now_ms >= self._retry_next_due
        stale = self.clock.monotonic() - self._retry_scanned_at >= self._inbox.scan_s and not self._inbox.watching
        if not (self._inbox.retry_changed or due_known or stale):
            return
        self._inbox.retry_changed = False
        self._retry_scanned_at = self.clock.monotonic()
        next_due: int | None = None
        promoted = 0
        with os.scandir(self.dirs["retry"]) as entries:
            for entry in entries:
                parsed = parse_retry(entry.name)
                if parsed is None:
                    continue
                due, ref = parsed
                if due > now_ms:
                    next_due = due if next_due is None else min(next_due, due)
                elif self.transition("retry", entry.name, "inbox", ref.file, "PROMOTE", sync=False, file=ref.file):
                    self._inbox.push(ref.file)
                    promoted += 1
        self._retry_next_due = next_due
        if promoted:
            self._sync_after("retry", "inbox")

    def _note_retry(self, due: int) -> None:
        if self._retry_next_due is None or due < self._retry_next_due:
            self._retry_next_due = due

    def _wait_hint(self) -> float:
        hint = self._inbox.scan_s
        if self._retry_next_due is not None:
            hint = min(hint, max(0.0, (self._retry_next_due - self._now_ms()) / 1000))
        return hint

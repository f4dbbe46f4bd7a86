"""Recovery: claims of dead, silent or unknown owners go back to the inbox (or on to done/ or dlq/)."""

from __future__ import annotations

import contextlib
import json
import logging
import os

from machina.log import fields
from machina.queue.claims import ClaimRegistry, clear_claims, foreign_registry, list_registries
from machina.queue.errors import (
    InvalidRequest,
)
from machina.queue.faults import point as fault_point
from machina.queue.fscore import QueueCore
from machina.queue.names import (
    JobRef,
    is_candidate,
    parse_file,
)
from machina.queue.request import load_request

log = logging.getLogger(__name__)


class RecoveryOps(QueueCore):
    """Recovery of orphaned claims, and the placing of jobs whose writer died (the WAL rebuild)."""

    def recover(self, worker_id: str | None = None) -> list[str]:
        if worker_id is not None:
            return self._take_over(worker_id)[1]
        return self._sweep()

    def _take_over(self, worker_id: str) -> tuple[ClaimRegistry, list[str]]:
        with self._registry_lock:
            registry = self._registries.get(worker_id)
            if registry is None:
                try:
                    registry = ClaimRegistry(self.claims_dir, worker_id, self.clock)
                except OSError as exc:
                    self._reraise("open the claim registry", exc)
                self._registries[worker_id] = registry
                fault_point("recover.takeover")
            if not registry.orphans:
                return registry, []
            pending, registry.orphans = registry.orphans, []  # one thread recovers them
        return registry, self._recover_orphans(registry, pending)

    def _recover_orphans(self, registry: ClaimRegistry, pending: list[str]) -> list[str]:
        """The predecessor's claims, each taken off the registry's record only once it is dealt with; what
        an error left is tried again on this worker id's next claim."""
        recovered: list[str] = []
        for done, file in enumerate(pending):
            try:
                if not self._held_by_another_live_worker(file, registry):
                    recovered += self._recover_file(file, f"worker {registry.worker_id} restarted")
            except BaseException:
                with self._registry_lock:
                    registry.orphans = pending[done:] + registry.orphans
                raise
            registry.remove(file)
        return recovered

    def _held_by_another_live_worker(self, file: str, registry: ClaimRegistry) -> bool:
        """Whether a live worker lists ``file``: the predecessor recorded its claim and died before the
        rename into processing/, and that worker has claimed the job since; it is running it now."""
        for path in list_registries(self.claims_dir):
            if path == registry.path:
                continue
            try:
                with foreign_registry(path) as (owner, dead, _fd):
                    if owner is not None and not dead and file in owner.claims:
                        return True
            except FileNotFoundError:
                continue
        return False

    def _sweep(self) -> list[str]:
        """Recover claims of dead owners, silent owners and nobody."""
        self._swept_at = self.clock.monotonic()
        listed: set[str] = set()
        recovered: list[str] = []
        with self._registry_lock:
            ours = {r.path: r for r in self._registries.values()}
        for path in list_registries(self.claims_dir):
            if path in ours:
                listed.update(ours[path].owner.claims)
                continue
            try:
                with foreign_registry(path) as (owner, dead, fd):
                    if owner is None:
                        continue
                    listed.update(owner.claims)
                    if dead and owner.claims:
                        why = f"worker {owner.worker_id} (pid {owner.pid}) died"
                        for file in owner.claims:
                            recovered += self._recover_file(file, why)
                        clear_claims(fd, owner)
                    elif not dead and (silent := owner.silent_ms(self.clock)) > self.config.claim_timeout_ms:
                        why = f"worker {owner.worker_id} (pid {owner.pid}) silent for {silent} ms"
                        for file in owner.claims:
                            recovered += self._recover_file(file, why)
            except FileNotFoundError:
                continue
        recovered += self._sweep_ownerless(listed)
        if self._index is not None and self._index.needs_settling():
            self._index.settle()  # a writer died: place the files of the jobs it had committed
        return recovered

    def _sweep_ownerless(self, listed: set[str]) -> list[str]:
        """Claims no registry lists (a registry deleted by hand): recovered once as old as the claim timeout."""
        recovered: list[str] = []
        cutoff = self.clock.time() - self.config.claim_timeout_ms / 1000
        with os.scandir(self.dirs["processing"]) as entries:
            for entry in entries:
                if entry.name in listed or not is_candidate(entry.name):
                    continue
                try:
                    if entry.stat().st_ctime < cutoff:
                        recovered += self._recover_file(entry.name, "claimed by no known worker")
                except FileNotFoundError:
                    continue
        return recovered

    def _recover_file(self, file: str, reason: str) -> list[str]:
        ref = parse_file(file)
        path = os.path.join(self.dirs["processing"], file)
        if ref is None:
            return []
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return []
        if self._finished_as_done(ref):
            # It ran and its completion was recorded; only the move to done/ was lost (a crash between them).
            if self.transition("processing", file, "done", file, "DONE", file=file, w=None, reason=reason):
                log.warning("claim (%s) had completed: moved to done/ (%s)", file, reason, extra=fields(job=ref.name))
                return [ref.name]
            return []
        max_attempts = self.config.max_attempts
        with contextlib.suppress(InvalidRequest):
            max_attempts = load_request(data).settings.max_attempts or max_attempts
        exhausted = ref.attempt >= max_attempts
        status = "dlq" if exhausted else "recovered"
        self._write_result(ref, self._envelope(ref, status, None, error=f"recovered: {reason}"), replace=False)
        fault_point("recover.result")
        state, target, kind = ("dlq", file, "DLQ") if exhausted else ("inbox", ref.next_attempt().file, "RECOVER")
        if not self.transition("processing", file, state, target, kind, file=file, to=target, reason=reason):
            return []
        if state == "inbox":
            self._inbox.push(target)
        log.warning("recovered claim (%s) to %s/: %s", file, state, reason, extra=fields(job=ref.name))
        return [ref.name]

    def _finished_as_done(self, ref: JobRef) -> bool:
        """True when this attempt's result in out/ says done (complete() got as far as writing it)."""
        try:
            with open(os.path.join(self.dirs["out"], ref.result_file()), "rb") as handle:
                envelope = json.loads(handle.read())
        except (OSError, ValueError):
            return False
        return isinstance(envelope, dict) and envelope.get("status") == "done"

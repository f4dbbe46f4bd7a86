"""The file queue's state and plumbing: what every concern of :class:`~machina.queue.fsqueue.FileQueue` shares.

One state change is :meth:`QueueCore.transition` (move, log, sync); results, temporary files, names, the
WAL record and its group commit live here too.  The concerns (enqueue, claims, recovery, maintenance,
status) are classes of their own modules on top of this one; :class:`FileQueue` joins them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import secrets
import threading
from collections import Counter
from typing import Any, NoReturn

from machina import wirejson
from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir
from machina.proctree import pid_alive
from machina.queue.base import (
    STATES,
    BaseQueue,
    Claim,
    JobStatus,
    QueueConfig,
    QueueStats,
)
from machina.queue.claims import ClaimRegistry
from machina.queue.dedup import DedupTable
from machina.queue.durable import GroupCommit, create_new, place, syncfs
from machina.queue.errors import (
    ClaimLost,
    QueueError,
    QueueNotWritable,
    is_not_writable,
)
from machina.queue.inbox import InboxIndex
from machina.queue.names import (
    JobNamer,
    JobRef,
    parse_file,
    parse_name,
)
from machina.queue.rebuild import rebuild_missing
from machina.queue.wal import WalWriter
from machina.queue.walindex import WalIndex
from machina.root import Root

log = logging.getLogger(__name__)

#: How often a process looks for claims of dead or silent owners (seconds).
RECOVERY_SWEEP_S = 1.0
#: How often maintain() forgets expired dedup entries (seconds).
DEDUP_PRUNE_S = 1.0
#: Stale temporary files of live-looking pids are removed after this long (seconds).
TMP_MAX_AGE_S = 24 * 3600
#: stats() answers from a cache this young (seconds): /metrics scrapes must not rescan 100k files each.
STATS_MAX_AGE_S = 0.5
#: Job names per PURGE record (a purge of 100k jobs writes records of a readable size).
PURGE_RECORD_NAMES = 500
#: Longest failure reason kept in a result file.
MAX_REASON = 4000

#: WAL record type -> stats counter name.
COUNTER_NAMES = {
    "ENQ": "enqueued",
    "UNENQ": "enqueues_taken_back",
    "DEDUP": "deduplicated",
    "CLAIM": "claimed",
    "RELEASE": "released",
    "SCHED": "retries_scheduled",
    "PROMOTE": "retries_promoted",
    "RECOVER": "recovered",
    "DONE": "done",
    "ASK": "asked",
    "APPROVE": "approved",
    "RETRY": "requeued",
    "DLQ": "dead_lettered",
    "FAIL": "failed",
    "PURGE": "purged",
    "TRUNC": "wal_truncations",
    "CKPT_BAD": "checkpoints_corrupt",
}


class QueueCore(BaseQueue):
    """The queue's state (directories, WAL, indexes, locks) and the plumbing every concern uses."""

    def __init__(
        self,
        root: Root | str,
        config: QueueConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.root = root if isinstance(root, Root) else Root(root)
        self.config = config or QueueConfig()
        self.clock = clock
        self._rng = rng or random.Random(secrets.randbits(64))  # noqa: S311 (jitter and name spread, not secrets)
        self.dirs = {state: self.root.queue_dir(state) for state in (*STATES, "out", "tmp")}
        for path in self.dirs.values():
            ensure_dir(path)
        self.claims_dir = os.path.join(self.root.state, "claims")
        cfg = self.config
        self._writer = (
            WalWriter(self.root.wal, crc=cfg.wal_crc32, fsync=cfg.fsync, clock=clock) if cfg.wal_enable else None
        )
        self._index = (
            WalIndex(self.root.wal, clock=clock, ttl_ms=cfg.dedup_ttl_ms, fsync=cfg.fsync, writer=self._writer)
            if self._writer is not None
            else None
        )
        if self._index is not None:
            self._index.rebuild = lambda records, cancelled: rebuild_missing(records, self.dirs, cancelled)
            self._index.sync_files = self._sync_files
        self._dedup = DedupTable(cfg.dedup_ttl_ms, self._index, refresh_s=cfg.scan_ms / 1000)
        self._commit = GroupCommit(self._writer.sync if self._writer is not None else None)
        self._inbox = InboxIndex(self.dirs["inbox"], self.dirs["retry"], cfg.scan_ms / 1000)
        self._registries: dict[str, ClaimRegistry] = {}
        self._registry_lock = threading.Lock()
        self._names = JobNamer(self.clock, self._rng)
        self._name_tmp_files()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._maintain_lock = threading.Lock()
        self._retry_next_due: int | None = None
        self._retry_scanned_at = float("-inf")
        self._swept_at = float("-inf")
        self._pruned_at = float("-inf")
        self._checkpoint_checked_at = clock.monotonic()
        self._stats_cache: tuple[float, QueueStats] | None = None
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._clean_tmp()

    def close(self) -> None:
        self._stop.set()
        self._inbox.stop()
        if self._maintenance is not None and self._maintenance is not threading.current_thread():
            self._maintenance.join(timeout=5)
        with self._registry_lock:
            for registry in self._registries.values():
                registry.close()
            self._registries.clear()
        if self._writer is not None:
            self._writer.close()
        self._commit.close()

    def _let_go_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors that carry the parent's locks."""
        for registry in self._registries.values():
            registry.close()
        self._registries = {}
        if self._writer is not None:
            self._writer.forget()
        self._inbox.after_fork_in_child()
        self._commit.after_fork_in_child()
        self._maintenance = None
        self._name_tmp_files()  # the parent goes on with the same names
        self._stop.set()

    def _registry_for(self, claim: Claim) -> ClaimRegistry:
        registry = self._registries.get(claim.worker_id)
        if registry is None:
            raise ClaimLost(f"{claim.name}: worker {claim.worker_id!r} holds no claims in this process")
        return registry

    def _ref_of(self, claim: Claim) -> JobRef:
        ref = parse_file(claim.file)
        if ref is None:
            raise ClaimLost(f"{claim.file}: not a job file")
        return ref

    def _ref_from_status(self, status: JobStatus) -> JobRef:
        ref = parse_name(status.name)
        assert ref is not None
        return ref.with_attempt(status.attempt)

    def _move(self, src_state: str, src_file: str, dst_state: str, dst_file: str) -> bool:
        try:
            os.rename(os.path.join(self.dirs[src_state], src_file), os.path.join(self.dirs[dst_state], dst_file))
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._reraise(f"move {src_state}/{src_file}", exc)
        return True

    def transition(
        self,
        src: str,
        src_file: str,
        dst: str,
        dst_file: str,
        kind: str,
        *,
        at_once: bool = False,
        sync: bool = True,
        **record: Any,
    ) -> bool:
        """One state change: move ``src/src_file`` to ``dst/dst_file``, log ``kind`` with ``record``, make
        both durable.  False (nothing logged) when the source is gone (someone else moved it).

        Durable means the WAL record is synced: a crash loses at most the rename, and the job is then found
        where it was (a claim is recovered, at least once).  ``at_once`` also fsyncs the directories (and
        ``out/``) now, for changes an operator was told about that no recovery would redo (requeue, approve).
        ``sync=False`` leaves the sync to the caller (:meth:`_sync_after`), once for a batch of changes."""
        if not self._move(src, src_file, dst, dst_file):
            return False
        self._log(kind, **record)
        if sync:
            self._sync_after(src, dst, at_once=at_once)
        return True

    def _sync_after(self, src: str, dst: str, *, at_once: bool = False) -> None:
        if at_once or self._writer is None:
            self._sync(src, dst, "out")
        else:
            self._sync_wal()

    def _sync_files(self) -> None:
        """Everything written to the queue's file system so far, on disk: before a checkpoint lets go of the
        WAL records that stood for files written without their own fsync."""
        if not self.config.fsync:
            return
        try:
            syncfs(self.root.queue_dir("inbox"))
        except OSError as exc:
            self._reraise("sync the queue's file system", exc)

    def _sync(self, *states: str) -> None:
        """fsync the directories of ``states`` and the WAL together (group commit)."""
        if not self.config.fsync:
            return
        try:
            self._commit.sync(dirs=[self.dirs[s] for s in states])
        except OSError as exc:
            self._reraise("fsync", exc)

    def _sync_wal(self) -> None:
        """The WAL alone: the commit point of a change whose files a checkpoint syncs later."""
        if not self.config.fsync:
            return
        try:
            self._commit.sync()
        except OSError as exc:
            self._reraise("fsync", exc)

    def _count(self, kind: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[kind] += n

    def _log(self, kind: str, ts: int | None = None, **record: Any) -> None:
        self._count(kind, int(record.get("n", 1)))
        if self._writer is not None:
            self._writer.append({"t": kind, "ts": ts if ts is not None else self._now_ms(), **record})

    def _reraise(self, what: str, exc: OSError) -> NoReturn:
        """Raise a full, read-only or failing disk as QueueNotWritable; anything else as it is."""
        if is_not_writable(exc):
            log.error("queue not writable: %s: %s", what, exc)
            raise QueueNotWritable(what, exc) from exc
        raise exc

    def _name_tmp_files(self) -> None:
        """Temporary files are named ``{pid}_{token}_{n}.tmp``: the pid for :meth:`_clean_tmp`, a token drawn
        once per process (a reused pid's leftovers cannot collide), then a count, not a random draw per
        file (a ``getrandom`` call was 4 % of a worker's samples)."""
        self._tmp_prefix = f"{self.dirs['tmp']}/{os.getpid()}_{secrets.token_hex(4)}_"
        self._tmp_count = itertools.count()

    def _write_tmp(self, data: bytes, what: str, *, durable: bool = True) -> str:
        """A new file in tmp/ holding ``data``; with ``durable`` and MACHINA_WAL_FSYNC=1 fsynced (shared with
        concurrent writers) before it is returned."""
        tmp = f"{self._tmp_prefix}{next(self._tmp_count):x}.tmp"
        try:
            fd = create_new(tmp, data)
        except OSError as exc:
            self._reraise(what, exc)
        try:
            if durable and self.config.fsync:
                self._commit.sync(fds=(fd,), wal=False)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                self._reraise(what, exc)
            raise
        os.close(fd)
        return tmp

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _clean_tmp(self) -> None:
        """Temporary files of processes that died mid-write (never acknowledged, so safe to drop)."""
        now = self.clock.time()
        with os.scandir(self.dirs["tmp"]) as entries:
            for entry in entries:
                pid_text = entry.name.split("_", 1)[0]
                try:
                    stale = not pid_alive(int(pid_text)) or now - entry.stat().st_mtime > TMP_MAX_AGE_S
                except (ValueError, FileNotFoundError):
                    continue
                if stale and int(pid_text) != os.getpid():
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _envelope(self, ref: JobRef, status: str, worker_id: str | None, **extra: Any) -> dict[str, Any]:
        envelope = {
            "name": ref.name,
            "attempt": ref.attempt,
            "status": status,
            "worker_id": worker_id,
            "finished_ms": self._now_ms(),
        }
        envelope.update({k: v for k, v in extra.items() if v is not None or k == "result"})
        return envelope

    def _write_result(self, ref: JobRef, envelope: dict[str, Any], replace: bool = True) -> bool:
        try:
            data = wirejson.dumps_sorted(envelope) + b"\n"
        except (TypeError, ValueError) as exc:
            raise QueueError(f"result of {ref.name} is not JSON: {exc}") from None
        tmp = self._write_tmp(data, "write result", durable=self._writer is None)
        dst = os.path.join(self.dirs["out"], ref.result_file())
        try:
            if replace:
                os.rename(tmp, dst)
            else:
                place(tmp, dst)
        except FileExistsError:
            os.unlink(tmp)
            return False
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._reraise("write result", exc)
        return True

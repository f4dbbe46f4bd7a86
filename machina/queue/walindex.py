"""What the WAL knows, folded: the dedup table and the transition counters, plus checkpoints.

State = ``checkpoint.json`` + every segment's records after the offset the checkpoint covers.  A process
keeps per-segment read offsets and catches up by reading only new bytes; when the checkpoint changes
(another process wrote one and may have deleted segments) it reloads from scratch.

``checkpoint.json``::

    {"version":1,"written_ms":...,"segments":{"seg_....wal":<bytes covered>,...},
     "counts":{"ENQ":n,...},"dedup":[[request_id,name,sha256,ts_ms],...],"crc":"xxxxxxxx"}

``crc`` is the CRC-32 of the file without that member (same rule as WAL records).  Checkpoints are written
under an exclusive ``flock`` on ``wal/checkpoint.lock`` (one checkpointer at a time; others skip), with
:func:`machina.fsutil.write_atomic`, so a crash mid-write leaves the previous one.  After the new checkpoint
is in place, sealed segments it fully covers are deleted.  A corrupt checkpoint is moved aside
(``checkpoint.json.corrupt-<ms>``), logged and counted (CKPT_BAD), and state is rebuilt from the segments
that remain: dedup entries only it held are lost, never a job.  A torn or corrupt tail of a sealed segment
is cut off (TRUNC); in a live segment reading stops before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from machina.clock import Clock
from machina.fsutil import fsync_dir, write_atomic
from machina.queue.faults import point as fault_point
from machina.queue.wal import BadRecord, WalWriter, check_crc, encode, list_segments, scan_segment, try_seal

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.json"
CHECKPOINT_LOCK = "checkpoint.lock"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class DedupEntry:
    name: str
    sha256: str
    ts_ms: int


@dataclass
class SegmentReport:
    name: str
    size: int
    records: int
    sealed: bool
    problem: str = ""
    bad_offset: int | None = None


@dataclass
class VerifyReport:
    segments: list[SegmentReport] = field(default_factory=list)
    checkpoint: str = "missing"  # ok, missing, corrupt: <reason>
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.checkpoint.startswith("corrupt") and not any(s.problem for s in self.segments)


class WalIndex:
    """Dedup entries and counters from checkpoint + segments.  Thread-safe."""

    def __init__(self, wal_dir: str, *, clock: Clock, ttl_ms: int, fsync: bool, writer: WalWriter | None) -> None:
        self.wal_dir = wal_dir
        self.clock = clock
        self.ttl_ms = ttl_ms
        self.fsync = fsync
        self.writer = writer
        self.lock = threading.RLock()
        self.entries: dict[str, DedupEntry] = {}
        self.counts: Counter[str] = Counter()
        self.offsets: dict[str, int] = {}
        self.loaded = False
        self.checkpoint_written_ms = 0
        self._checkpoint_id: tuple[int, int, int] | None = None
        self._complained: set[tuple[str, int]] = set()

    # --- reading ---------------------------------------------------------------------------------------

    def refresh(self, repair: bool = False) -> None:
        """Catch up with every segment; reload from the checkpoint when it changed.  ``repair`` also cuts
        torn tails of sealed segments."""
        with self.lock:
            ident = self._stat_checkpoint()
            if not self.loaded or ident != self._checkpoint_id:
                self._reload(ident)
            for name in list_segments(self.wal_dir):
                self._catch_up(name, repair)
            self.loaded = True

    def _stat_checkpoint(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.wal_dir, CHECKPOINT))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self, ident: tuple[int, int, int] | None) -> None:
        self.entries, self.counts, self.offsets = {}, Counter(), {}
        self.checkpoint_written_ms = 0
        self._checkpoint_id = ident
        if ident is None:
            return
        path = os.path.join(self.wal_dir, CHECKPOINT)
        try:
            data = read_checkpoint(path)
        except FileNotFoundError:
            self._checkpoint_id = None
            return
        except BadRecord as exc:
            self._quarantine(path, str(exc))
            return
        self.checkpoint_written_ms = int(data["written_ms"])
        self.counts.update({str(k): int(v) for k, v in data["counts"].items()})
        self.offsets.update({str(k): int(v) for k, v in data["segments"].items()})
        for rid, name, sha, ts in data["dedup"]:
            self.entries[rid] = DedupEntry(name, sha, int(ts))

    def _quarantine(self, path: str, reason: str) -> None:
        aside = f"{path}.corrupt-{int(self.clock.time() * 1000)}"
        log.error("WAL checkpoint %s is corrupt (%s): moved to %s; rebuilding from the segments", path, reason, aside)
        with contextlib.suppress(OSError):
            os.rename(path, aside)
        self._checkpoint_id = self._stat_checkpoint()
        self._record({"t": "CKPT_BAD", "ts": self._now(), "reason": reason})

    def _catch_up(self, name: str, repair: bool) -> None:
        path = os.path.join(self.wal_dir, name)
        start = self.offsets.get(name, 0)
        try:
            if os.stat(path).st_size <= start:
                return
            scan = scan_segment(path, start)
        except FileNotFoundError:
            self.offsets.pop(name, None)
            return
        for record in scan.records:
            self._apply(record)
        self.offsets[name] = scan.end
        if scan.bad_offset is not None:
            self._bad_tail(name, path, scan.bad_offset, scan.reason, scan.size, repair)

    def _bad_tail(self, name: str, path: str, offset: int, reason: str, size: int, repair: bool) -> None:
        if name in self._own_segments() and name == self._current_segment():
            return  # our own segment mid-append: the line is still being written
        fd = try_seal(path) if repair else None
        if fd is None:
            if (name, offset) not in self._complained and reason != "unterminated record":
                self._complained.add((name, offset))
                log.warning("WAL segment %s: bad record at byte %d (%s); reading stops there", name, offset, reason)
            return
        try:
            os.ftruncate(fd, offset)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        log.warning(
            "WAL segment %s: %s at byte %d; cut %d bytes of torn or corrupt tail", name, reason, offset, size - offset
        )
        self._record({"t": "TRUNC", "ts": self._now(), "seg": name, "at": offset, "bytes": size - offset})

    def _apply(self, record: dict[str, Any]) -> None:
        kind = record["t"]
        self.counts[kind] += int(record.get("n", 1))
        if kind == "ENQ":
            rid = record.get("rid")
            if rid and record.get("sha") and rid not in self.entries:
                self.entries[rid] = DedupEntry(record["name"], record["sha"], record["ts"])
        elif kind == "UNENQ":  # a job taken back after its fsync failed: its request was never queued
            taken_back = record.get("rid")
            entry = self.entries.get(taken_back) if isinstance(taken_back, str) else None
            if isinstance(taken_back, str) and entry is not None and entry.name == record.get("name"):
                del self.entries[taken_back]

    def _record(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.append(record)

    def _own_segments(self) -> set[str]:
        return self.writer.own_segments if self.writer is not None else set()

    def _current_segment(self) -> str:
        return self.writer.segment if self.writer is not None else ""

    def _now(self) -> int:
        return int(self.clock.time() * 1000)

    # --- dedup -----------------------------------------------------------------------------------------

    def lookup(self, rid: str, now_ms: int) -> DedupEntry | None:
        with self.lock:
            entry = self.entries.get(rid)
            if entry is not None and now_ms - entry.ts_ms > self.ttl_ms:
                del self.entries[rid]
                return None
            return entry

    def prune(self, now_ms: int) -> int:
        with self.lock:
            expired = [rid for rid, e in self.entries.items() if now_ms - e.ts_ms > self.ttl_ms]
            for rid in expired:
                del self.entries[rid]
            return len(expired)

    # --- checkpoint ------------------------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Write a checkpoint and delete the sealed segments it covers.  False when another process holds the
        checkpoint lock (it is writing one now)."""
        with self._checkpoint_lock() as locked:
            if not locked:
                return False
            with self.lock:
                self.refresh(repair=True)
                now = self._now()
                self.prune(now)
                sizes = {name: self.offsets.get(name, 0) for name in list_segments(self.wal_dir)}
                body = {
                    "version": CHECKPOINT_VERSION,
                    "written_ms": now,
                    "segments": sizes,
                    "counts": dict(self.counts),
                    "dedup": [[rid, e.name, e.sha256, e.ts_ms] for rid, e in self.entries.items()],
                }
                path = os.path.join(self.wal_dir, CHECKPOINT)
                write_atomic(path, encode(body, crc=True), fsync=self.fsync)
                fault_point("checkpoint.written")
                self._checkpoint_id = self._stat_checkpoint()
                self.checkpoint_written_ms = now
                self._drop_covered(sizes)
            self._clean_stale_tmp()
            return True

    def checkpoint_due(self, interval_ms: int) -> bool:
        """True when the last checkpoint (by any process) is older than ``interval_ms`` by its file time."""
        try:
            mtime = os.stat(os.path.join(self.wal_dir, CHECKPOINT)).st_mtime
        except FileNotFoundError:
            return bool(list_segments(self.wal_dir))
        return (time.time() - mtime) * 1000 >= interval_ms  # file times are real time

    @contextlib.contextmanager
    def _checkpoint_lock(self) -> Iterator[bool]:
        try:
            fd = os.open(os.path.join(self.wal_dir, CHECKPOINT_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _drop_covered(self, sizes: dict[str, int]) -> None:
        dropped = False
        for name, covered in sizes.items():
            path = os.path.join(self.wal_dir, name)
            fd = try_seal(path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_size == covered:
                    os.unlink(path)
                    self.offsets.pop(name, None)
                    self._own_segments().discard(name)
                    dropped = True
            finally:
                os.close(fd)
        if dropped and self.fsync:
            fsync_dir(self.wal_dir)

    def _clean_stale_tmp(self) -> None:
        """write_atomic's temporary files left by a checkpointer killed mid-write."""
        for name in os.listdir(self.wal_dir):
            if name.startswith(f".{CHECKPOINT}.") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.wal_dir, name))

    # --- verify ----------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Read everything without changing anything."""
        report = VerifyReport()
        path = os.path.join(self.wal_dir, CHECKPOINT)
        try:
            read_checkpoint(path)
            report.checkpoint = "ok"
        except FileNotFoundError:
            report.checkpoint = "missing"
        except BadRecord as exc:
            report.checkpoint = f"corrupt: {exc}"
        for name in list_segments(self.wal_dir):
            seg_path = os.path.join(self.wal_dir, name)
            fd = try_seal(seg_path)
            sealed = fd is not None
            if fd is not None:
                os.close(fd)
            try:
                scan = scan_segment(seg_path)
            except FileNotFoundError:
                continue
            problem = ""
            if scan.bad_offset is not None and not (scan.partial and not sealed):
                problem = scan.reason
            report.segments.append(SegmentReport(name, scan.size, len(scan.records), sealed, problem, scan.bad_offset))
            report.records += len(scan.records)
        return report


def read_checkpoint(path: str) -> dict[str, Any]:
    """The checkpoint's content; BadRecord when it is torn, corrupt or of another version."""
    with open(path, "rb") as handle:
        line = handle.read().rstrip(b"\n")
    crc = check_crc(line)
    if crc is None:
        raise BadRecord("no checksum (torn or not a checkpoint)")
    if not crc:
        raise BadRecord("crc mismatch")
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        raise BadRecord("unknown checkpoint version")
    for key, kind in (("written_ms", int), ("segments", dict), ("counts", dict), ("dedup", list)):
        if not isinstance(data.get(key), kind):
            raise BadRecord(f"{key} missing or of the wrong type")
    if not all(isinstance(item, list) and len(item) == 4 for item in data["dedup"]):
        raise BadRecord("malformed dedup entry")
    return data


__all__ = ["BadRecord", "DedupEntry", "VerifyReport", "WalIndex", "read_checkpoint"]

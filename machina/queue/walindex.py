"""What the WAL knows, folded: the dedup table and the transition counters, plus checkpoints.

State = ``checkpoint.json`` + every segment's records after the offset the checkpoint covers.  A process
keeps per-segment read offsets and catches up by reading only new bytes; the records its own writer
appended it takes from the writer instead (:meth:`WalWriter.take_fed`: not read back, not decoded again).
When the checkpoint changes (another process wrote one and may have deleted segments) it reloads from
scratch.

``checkpoint.json``::

    {"version":1,"written_ms":...,"segments":{"seg_....wal":<bytes covered>,...},
     "counts":{"ENQ":n,...},"dedup":[[request_id,name,sha256,ts_ms],...],
     "durable":{"seg_....wal":<bytes>,...},"cancelled":[[name,ts_ms],...],"crc":"xxxxxxxx"}

``durable`` says how much of each segment a checkpoint has made durable: the records before that offset
describe files the checkpoint synced (``syncfs``) after placing any a crash had lost (see
:mod:`machina.queue.rebuild`); a segment is deleted only when it is sealed, covered and durable.
``cancelled`` lists jobs (UNENQ, PURGE) that must never be placed again from an older ENQ record, kept for
as long as a segment that may hold such a record is not durable.  Both are optional (older checkpoints).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from machina.clock import Clock
from machina.fsutil import fsync_dir, write_atomic
from machina.queue.faults import point as fault_point
from machina.queue.wal import (
    BadRecord,
    Fed,
    SegmentRecords,
    WalWriter,
    check_crc,
    encode,
    list_segments,
    scan_segment,
    try_seal,
)

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
        #: segment -> bytes a checkpoint declared durable (every job file its records describe was synced)
        self.durable: dict[str, int] = {}
        #: job name -> ts of an UNENQ or PURGE record: never placed again from an ENQ record
        self.cancelled: dict[str, int] = {}
        #: segment -> bytes this process has settled (rebuilt what was missing) but no checkpoint yet covers
        self._settled: dict[str, int] = {}
        self._placed = 0
        #: places the jobs of sealed, not yet durable records that a crash left without their file
        #: Places the jobs of ENQ records whose files a crash lost; given records it may iterate more than once.
        self.rebuild: Callable[[Iterable[dict[str, Any]], dict[str, int]], int] | None = None
        #: makes every file placed so far durable before a checkpoint declares it so (syncfs)
        self.sync_files: Callable[[], None] | None = None

    # --- reading ---------------------------------------------------------------------------------------

    def refresh(self, repair: bool = False) -> None:
        """Catch up with every segment; reload from the checkpoint when it changed.  ``repair`` also cuts
        torn tails of sealed segments."""
        with self.lock:
            ident = self._stat_checkpoint()
            if not self.loaded or ident != self._checkpoint_id:
                self._reload(ident)
            fed = self._take_fed()  # before the segments are looked at: each fed record is in its file by then
            for name in list_segments(self.wal_dir):
                self._catch_up(name, repair, fed.get(name, ()))
            self.loaded = True

    def _take_fed(self) -> dict[str, list[Fed]]:
        """This process's own records since the last refresh, by segment (see WalWriter.take_fed)."""
        by_segment: dict[str, list[Fed]] = {}
        if self.writer is not None:
            for entry in self.writer.take_fed():
                by_segment.setdefault(entry[0], []).append(entry)
        return by_segment

    def _stat_checkpoint(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(os.path.join(self.wal_dir, CHECKPOINT))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self, ident: tuple[int, int, int] | None) -> None:
        self.entries, self.counts, self.offsets = {}, Counter(), {}
        self.durable, self.cancelled = {}, {}
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
        self.durable.update({str(k): int(v) for k, v in data.get("durable", {}).items()})
        self.cancelled.update({str(name): int(ts) for name, ts in data.get("cancelled", [])})

    def _quarantine(self, path: str, reason: str) -> None:
        aside = f"{path}.corrupt-{int(self.clock.time() * 1000)}"
        log.error("WAL checkpoint %s is corrupt (%s): moved to %s; rebuilding from the segments", path, reason, aside)
        with contextlib.suppress(OSError):
            os.rename(path, aside)
        self._checkpoint_id = self._stat_checkpoint()
        self._record({"t": "CKPT_BAD", "ts": self._now(), "reason": reason})

    def _catch_up(self, name: str, repair: bool, fed: Sequence[Fed] = ()) -> None:
        path = os.path.join(self.wal_dir, name)
        start = self.offsets.get(name, 0)
        try:
            size = os.stat(path).st_size
            if fed:
                start = self.offsets[name] = self._apply_fed(start, fed)
            if size <= start:
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

    def _apply_fed(self, start: int, fed: Sequence[Fed]) -> int:
        """Apply the fed records that continue the segment from ``start``; the offset after the last one.
        Those before ``start`` were read already (from the file, or a checkpoint covered them); at a gap
        (records dropped, or appended without a record) the rest is left to be read from the file."""
        for _, begin, end, record in fed:
            if end <= start:
                continue
            if begin != start:
                break
            self._apply(record)
            start = end
        return start

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
        elif kind == "PURGE":
            for name in record.get("names", ()):
                self.cancelled[str(name)] = record["ts"]
        elif kind == "UNENQ":  # a job taken back after its fsync failed: its request was never queued
            if isinstance(record.get("name"), str):
                self.cancelled[record["name"]] = record["ts"]
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
                settled = self._settle()
                if settled and self.sync_files is not None:
                    self.sync_files()  # the files of the settled records reach the disk before we say so
                self.durable.update(settled)
                now = self._now()
                self.prune(now)
                sizes = {name: self.offsets.get(name, 0) for name in list_segments(self.wal_dir)}
                self.durable = {name: size for name, size in self.durable.items() if name in sizes}
                self._prune_cancelled(sizes)
                body = {
                    "version": CHECKPOINT_VERSION,
                    "written_ms": now,
                    "segments": sizes,
                    "counts": dict(self.counts),
                    "dedup": [[rid, e.name, e.sha256, e.ts_ms] for rid, e in self.entries.items()],
                    "durable": self.durable,
                    "cancelled": [[name, ts] for name, ts in self.cancelled.items()],
                }
                path = os.path.join(self.wal_dir, CHECKPOINT)
                write_atomic(path, encode(body, crc=True), fsync=self.fsync)
                fault_point("checkpoint.written")
                self._checkpoint_id = self._stat_checkpoint()
                self.checkpoint_written_ms = now
                self._drop_covered(sizes)
            self._clean_stale_tmp()
            return True

    def settle(self) -> int:
        """Place again the jobs a crash left without their file (sealed segments only), now, without a
        checkpoint; the number placed.  Skipped (0) while another process holds the checkpoint lock."""
        with self._checkpoint_lock() as locked:
            if not locked:
                return 0
            with self.lock:
                self.refresh(repair=True)
                before = self._placed
                self._settle()
                return self._placed - before

    def needs_settling(self) -> bool:
        """True when a segment no writer holds any longer has records no checkpoint declared durable and this
        process has not settled (a writer died or rotated): cheap enough for every recovery sweep."""
        own = self._own_segments()
        for name in list_segments(self.wal_dir):
            if name in own:
                continue
            done = max(self.durable.get(name, 0), self._settled.get(name, 0))
            try:
                if os.stat(os.path.join(self.wal_dir, name)).st_size <= done:
                    continue
            except FileNotFoundError:
                continue
            fd = try_seal(os.path.join(self.wal_dir, name))
            if fd is not None:
                os.close(fd)
                return True
        return False

    def _settle(self) -> dict[str, int]:
        """Under the checkpoint lock: for every sealed segment, run :attr:`rebuild` over its records past
        what is durable; the sealed segments and their sizes, every job of which now has its file."""
        sealed: dict[str, int] = {}
        for name in list_segments(self.wal_dir):
            path = os.path.join(self.wal_dir, name)
            fd = try_seal(path)
            if fd is None:
                continue
            try:
                start = max(self.durable.get(name, 0), self._settled.get(name, 0))
                size = os.fstat(fd).st_size
                if size > start:
                    size = self._settle_segment(path, start)
                    self._settled[name] = size
                sealed[name] = size
            finally:
                os.close(fd)
        return sealed

    def _settle_segment(self, path: str, start: int) -> int:
        """Rebuild from one sealed segment's records past ``start``; the offset settled up to.  Records
        without a job body (counters, dedup, segments of older versions) need no decoding: skipped unread."""
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read()
        if b',"job":{' not in data:
            return start + len(data)
        records = SegmentRecords(data, start)  # decoded as iterated: a segment's 30k jobs are never all held
        if self.rebuild is not None:
            self._placed += self.rebuild(records, self.cancelled)
        if not records.read_through:  # settled up to the end (or the first bad record) whatever rebuild read
            for _ in records:
                pass
        return records.end

    def _prune_cancelled(self, sizes: dict[str, int]) -> None:
        """Forget cancellations older than every segment that may still hold an ENQ record not yet durable
        (an ENQ comes before its cancellation; a minute of margin for clocks of other processes)."""
        open_starts = [_segment_start_ms(n) for n, size in sizes.items() if self.durable.get(n, 0) < size]
        horizon = min(open_starts, default=self._now()) - 60_000
        self.cancelled = {name: ts for name, ts in self.cancelled.items() if ts >= horizon}

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
            if self.durable.get(name, 0) < covered:
                continue  # a job file it describes may not be on disk yet: the record must stay
            path = os.path.join(self.wal_dir, name)
            fd = try_seal(path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_size == covered:
                    os.unlink(path)
                    self.offsets.pop(name, None)
                    self.durable.pop(name, None)
                    self._settled.pop(name, None)
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


def _segment_start_ms(name: str) -> int:
    """``seg_{start_ms}_{pid}_{rand}.wal`` -> start_ms."""
    return int(name.split("_", 2)[1])


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
    if not isinstance(data.get("durable", {}), dict) or not isinstance(data.get("cancelled", []), list):
        raise BadRecord("durable or cancelled of the wrong type")
    return data


__all__ = ["BadRecord", "DedupEntry", "VerifyReport", "WalIndex", "read_checkpoint"]

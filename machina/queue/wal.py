"""The queue's write-ahead log: JSON-lines segments under ``queue/wal/``, one writer per segment.

Format (one record per line, UTF-8)::

    {"t":"ENQ","ts":1700000000123,"name":"p5000_rq_..._rid0a1b2c3d.json","rid":"abc","sha":"<sha256 hex>"}
    {"t":"DONE","ts":1700000000456,"file":"p5000_rq_....json","w":"1","crc":"89abcdef"}

``t`` (record type) and ``ts`` (epoch ms) come first in every record.  With ``MACHINA_WAL_CRC32=1`` the
last member is ``"crc"``: 8 lowercase hex digits of the CRC-32 (zlib) of the record's bytes *without* that
member, that is the line up to ``,"crc":"`` with ``}`` appended.  A reader checks it when present.  Types:
ENQ (job accepted; with ``rid``/``sha`` it is also the dedup entry), DEDUP (a repeat answered from the
dedup table), CLAIM, RELEASE, SCHED (failed attempt scheduled for retry), PROMOTE (due retry back to the
inbox), RECOVER (orphaned claim back to the inbox), DONE, RETRY (operator re-queued a dlq/failed job), DLQ,
FAIL (permanent), PURGE (``n`` files removed), TRUNC (a torn or corrupt tail was cut off), CKPT_BAD (a
corrupt checkpoint was set aside).

**A segment per process.**  Each process appends only to its own segment
(``seg_{start_ms}_{pid}_{rand}.wal``), holding an exclusive ``flock`` on it while it writes, so writers
never contend across processes, a record is never interleaved with another process's, and "is this
segment still being written?" is answered by trying the lock (a crashed writer's lock is gone).  Within a
process, threads append under a mutex and share fsyncs through group commit; the fdatasync runs outside
the mutex, so the next batch is appended while the current one syncs.  Segments rotate at
:data:`SEGMENT_BYTES`.  A segment whose lock is free is *sealed*: a reader may cut its torn tail, and a
checkpoint that covers it deletes it.

A record is written to the file (not only buffered) before the operation it describes is reported, so
other processes see it and a process crash (not a power cut) cannot lose it; with ``MACHINA_WAL_FSYNC=1``
it is also fsynced (in a group) before the report.  An ``ENQ`` record carries the job's canonical body as
its ``job`` member: it is the commit point of the enqueue, and the job's file is placed from it after a
crash (:mod:`machina.queue.rebuild`).  A segment stays locked while a placement promised by one of its
records is in progress, so "sealed" also means "every file its writer will ever place is placed".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from machina import wirejson
from machina.clock import Clock
from machina.fsutil import ensure_dir, fsync_dir
from machina.queue.faults import point as fault_point

log = logging.getLogger(__name__)

RECORD_TYPES = frozenset(
    {
        "ENQ",
        "UNENQ",
        "DEDUP",
        "CLAIM",
        "RELEASE",
        "SCHED",
        "PROMOTE",
        "RECOVER",
        "DONE",
        "ASK",
        "APPROVE",
        "RETRY",
        "DLQ",
        "FAIL",
        "PURGE",
        "TRUNC",
        "CKPT_BAD",
    }
)
SEGMENT_BYTES = 4 * 1024 * 1024
SEGMENT_RE = re.compile(r"seg_\d{13}_\d+_[0-9a-f]{6}\.wal")
_CRC_OPEN = b',"crc":"'
#: At most this many records a writer keeps for its process's WalIndex between two of its refreshes (see
#: :meth:`WalWriter.take_fed`); past it they are dropped and the index reads them back from the file.
FED_MAX = 4096  # 27k records a second at the dedup refresh (MACHINA_SERVE_SCAN_MS=150); about 3 MB at most
_CRC_SUFFIX_LEN = len(_CRC_OPEN) + 8 + 2  # ,"crc":"xxxxxxxx"}


class BadRecord(ValueError):
    pass


#: A record this process appended, as (segment, offset of its line, offset after it, the record without
#: its ``job`` and ``crc`` members): what :func:`decode` would give the index, without reading it back.
Fed = tuple[str, int, int, dict[str, Any]]


def encode(record: dict[str, Any], crc: bool) -> bytes:
    """One line for ``record`` (which must start with ``t`` and ``ts``)."""
    body = wirejson.dumps(record)
    if crc:
        body = body[:-1] + b',"crc":"%08x"}' % zlib.crc32(body)
    return body + b"\n"


def encode_job(record: dict[str, Any], job: bytes, crc: bool) -> bytes:
    """One line for ``record`` with the job's canonical JSON ``job`` as its last member ``"job"``, embedded
    as it is (it is already one JSON object without spaces or newlines: no second encoding of the body)."""
    head = wirejson.dumps(record)
    body = head[:-1] + b',"job":' + job + b"}"
    if crc:
        body = body[:-1] + b',"crc":"%08x"}' % zlib.crc32(body)
    return body + b"\n"


def check_crc(line: bytes) -> bool | None:
    """True/False when ``line`` (without newline) ends in a ``"crc"`` member that matches or not; None when
    it has none."""
    if not (line.endswith(b'"}') and line[-_CRC_SUFFIX_LEN : -_CRC_SUFFIX_LEN + len(_CRC_OPEN)] == _CRC_OPEN):
        return None
    try:
        expected = int(line[-10:-2], 16)
    except ValueError:
        return False
    return zlib.crc32(line[:-_CRC_SUFFIX_LEN] + b"}") == expected


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline); BadRecord when torn, corrupt or not ours."""
    if check_crc(line) is False:
        raise BadRecord("crc mismatch")
    try:
        record = wirejson.loads(line)
    except ValueError as exc:
        raise BadRecord(f"not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("t") not in RECORD_TYPES or not isinstance(record.get("ts"), int):
        raise BadRecord("not a WAL record")
    return record


@dataclass
class SegmentScan:
    """What reading a segment from ``start`` found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0  #: offset just after the last good record
    size: int = 0  #: file size seen
    bad_offset: int | None = None  #: where a corrupt or torn record starts (None: clean)
    reason: str = ""
    partial: bool = False  #: the tail is an unterminated line (in-progress write, or torn)


def scan_segment(path: str, start: int = 0) -> SegmentScan:
    """Read complete records from ``start``; stop at the first bad one."""
    scan = SegmentScan(end=start)
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    scan.size = start + len(data)
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            scan.partial = True
            scan.bad_offset = start + pos
            scan.reason = "unterminated record"
            break
        try:
            scan.records.append(decode(data[pos:newline]))
        except BadRecord as exc:
            scan.bad_offset = start + pos
            scan.reason = str(exc)
            break
        pos = newline + 1
        scan.end = start + pos
    return scan


class SegmentRecords:
    """The good records of ``data`` (a segment read from offset ``start``), decoded one at a time each time
    it is iterated, so a reader of a whole segment (a checkpoint settling 4 MiB of ENQ records) never holds
    them all decoded at once.  Iteration stops at the first torn or corrupt record, as :func:`scan_segment`
    does; ``end`` is then the offset just after the last good record."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.start = start
        self.end = start
        self.read_through = False  #: one iteration reached the end (or the first bad record)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        data, pos = self.data, 0
        while pos < len(data):
            newline = data.find(b"\n", pos)
            if newline < 0:
                break
            try:
                record = decode(data[pos:newline])
            except BadRecord:
                break
            pos = newline + 1
            self.end = max(self.end, self.start + pos)
            yield record
        self.read_through = True


def try_seal(path: str) -> int | None:
    """An fd holding an exclusive lock on ``path`` when no writer holds it (the segment is sealed)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def list_segments(wal_dir: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(wal_dir) if SEGMENT_RE.fullmatch(name))
    except FileNotFoundError:
        return []


def _write_all(fd: int, line: bytes) -> None:
    """Write all of ``line``; the error of the write that could not go on (EFBIG, ENOSPC) is raised."""
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, "short write to WAL segment")
        view = view[written:]


class WalWriter:
    """This process's segment.  Thread-safe; ``append`` writes at once, ``sync`` fsyncs (for group commit).

    Errors (a full disk, an I/O error) are logged, counted in ``errors`` and cut back to the last whole
    record; the WAL then starts a fresh segment on the next append.  An error of :meth:`commit_append` or
    :meth:`sync` (the commit point) is also raised: the operation is then not acknowledged.  An error of a
    plain :meth:`append` (a record that only helps restart and counters) does not fail the operation.
    """

    def __init__(self, wal_dir: str, *, crc: bool, fsync: bool, clock: Clock) -> None:
        self.wal_dir = wal_dir
        self.crc = crc
        self.fsync = fsync
        self.clock = clock
        self.errors = 0
        self.own_segments: set[str] = set()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._name = ""
        self._size = 0
        self._dirty = False
        #: segment -> placements still to be done for records appended to it (see commit_append)
        self._pending: dict[str, int] = {}
        #: rotated segments kept open (so locked, so not sealed) until their pending placements are done
        self._retired: dict[str, int] = {}
        #: a failed fdatasync that records appended since the last sync may share: the next sync raises it
        self._lost: OSError | None = None
        #: records appended since this process's WalIndex last took them (see take_fed)
        self._fed: list[Fed] = []
        self._feeding = False

    def append(self, record: dict[str, Any]) -> bool:
        """Write ``record`` now (synced by the next :meth:`sync`); False when it could not be written.  The
        dict is kept as given for :meth:`take_fed`: callers build it for the call and do not change it."""
        line = encode(record, self.crc)
        with self._lock:
            try:
                fd = self._open()
                fault_point("wal.append", fd=fd, line=line)
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write to WAL segment")
            except OSError as exc:
                self._fail("append", exc)
                return False
            self._keep(record, len(line))
            self._size += len(line)
            self._dirty = True
            if self._size >= SEGMENT_BYTES:
                self._rotate()
            return True

    def commit_append(self, line: bytes, record: dict[str, Any] | None = None) -> str:
        """Append a record that is a commit point (a job's ENQ): raises OSError when it could not be written,
        and holds the segment unsealed until :meth:`release` says the files it describes are placed, so that
        no reader takes a record whose file is still being placed for one a crash left unplaced.  ``record``
        is ``line`` decoded without its ``job`` (for :meth:`take_fed`); without it the index reads the line
        back from the file."""
        with self._lock:
            try:
                fd = self._open()
                fault_point("wal.append", fd=fd, line=line)
                _write_all(fd, line)
            except OSError as exc:
                self._fail("append", exc)
                raise
            name = self._name
            self._pending[name] = self._pending.get(name, 0) + 1
            if record is not None:
                self._keep(record, len(line))
            self._size += len(line)
            self._dirty = True
            if self._size >= SEGMENT_BYTES:
                self._rotate()
            return name

    def take_fed(self) -> list[Fed]:
        """The records appended since the last call, in order, so this process's index need not read back
        and decode what it wrote itself (the JSON decoding of its own ENQ records was a tenth of an enqueue's
        CPU).  Keeping them starts with the first call; when more than :data:`FED_MAX` pile up between two
        calls they are dropped until the next one (a process whose index seldom reads holds nothing).  A
        record that failed to be written is never among them."""
        with self._lock:
            fed, self._fed = self._fed, []
            self._feeding = True
            return fed

    def _keep(self, record: dict[str, Any], length: int) -> None:
        """Called with the lock held, after ``record``'s line was written at ``self._size``."""
        if not self._feeding:
            return
        if len(self._fed) >= FED_MAX:
            self._fed, self._feeding = [], False
            return
        self._fed.append((self._name, self._size, self._size + length, record))

    def release(self, segment: str) -> None:
        """The placement promised by :meth:`commit_append` on ``segment`` is done (or abandoned)."""
        with self._lock:
            left = self._pending.get(segment, 0) - 1
            if left > 0:
                self._pending[segment] = left
                return
            self._pending.pop(segment, None)
            fd = self._retired.pop(segment, None)
            if fd is not None:
                os.close(fd)  # releases the flock: the segment is sealed

    def sync(self) -> None:
        """fdatasync what was appended before the call; an error is counted, logged and raised (the WAL is the
        commit point).

        The append lock is not held during the fdatasync: other threads append the next batch meanwhile,
        which is what lets a group commit grow past one record.  The sync works on a duplicate of the
        descriptor, so a rotation meanwhile cannot close it under us.  A failure also taints what others
        appended while it ran (and a failed fdatasync at rotation, what the old segment held): the next
        sync raises it once, so no record whose sync failed is ever reported durable."""
        with self._lock:
            lost, self._lost = self._lost, None
            if lost is not None:
                raise lost
            if self._fd is None or not self._dirty:
                return
            fd, name = os.dup(self._fd), self._name
            self._dirty = False
        try:
            fault_point("wal.sync")
            os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                if name == self._name and self._fd is not None:
                    self._fail("fsync", exc)
                else:
                    self.errors += 1
                    log.error("WAL fsync failed on segment %s: %s", name, exc)
                self._lost = exc
            raise
        finally:
            os.close(fd)

    def check(self) -> None:
        """Start a new segment if ours was deleted under us (an operator removed wal/)."""
        with self._lock:
            if self._fd is not None and not os.path.exists(os.path.join(self.wal_dir, self._name)):
                log.warning("WAL segment %s was deleted; starting a new one", self._name)
                self._rotate()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._rotate()

    def forget(self) -> None:
        """In a forked child: drop the parent's segment without touching it (no fsync, no lock release
        for the parent: closing our copy of the descriptor leaves the parent's lock in place)."""
        fd, self._fd = self._fd, None
        for held in [*([fd] if fd is not None else []), *self._retired.values()]:
            with contextlib.suppress(OSError):
                os.close(held)
        self._retired, self._pending, self._lost = {}, {}, None
        self._fed, self._feeding = [], False
        self._lock = threading.Lock()

    @property
    def segment(self) -> str:
        return self._name

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        ensure_dir(self.wal_dir)
        name = f"seg_{int(self.clock.time() * 1000):013d}_{os.getpid()}_{secrets.token_hex(3)}.wal"
        path = os.path.join(self.wal_dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if self.fsync:
            fsync_dir(self.wal_dir)
        self._fd, self._name, self._size = fd, name, 0
        self.own_segments.add(name)
        return fd

    def _rotate(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.fsync and self._dirty:
                os.fdatasync(fd)
        except OSError as exc:
            self.errors += 1
            self._lost = exc  # what the old segment holds may not be durable: its committers must hear so
            log.error("WAL segment %s: fsync before rotation failed: %s", self._name, exc)
        finally:
            self._dirty = False
            if self._pending.get(self._name):
                self._retired[self._name] = fd  # sealed once its last placement is released
            else:
                os.close(fd)  # releases the flock: the segment is sealed

    def _fail(self, what: str, exc: OSError) -> None:
        self.errors += 1
        log.error("WAL %s failed on segment %s: %s (the queue goes on; restart may rescan)", what, self._name, exc)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half record stays behind
            self._rotate()

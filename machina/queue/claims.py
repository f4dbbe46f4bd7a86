"""Who holds which claimed job: one registry file per worker id, ``state/claims/<worker_id>.json``.

The file says who the owner is (worker id, pid, boot id from ``/proc/sys/kernel/random/boot_id``, start
and last heartbeat in epoch ms, and the last heartbeat on CLOCK_BOOTTIME) and which ``processing/`` files
it holds.  Whether a live owner has gone silent is judged on CLOCK_BOOTTIME when the owner runs in this
boot (:meth:`Owner.silent_ms`): the wall clock may be stepped (NTP, an operator) and would otherwise make
every live owner look silent, or none.  The owner keeps an exclusive
``flock`` on it for as long as it lives, which is how everyone else tells a live owner from a dead one: the
kernel drops the lock when the process dies, whatever the pid is reused for, and no lock survives a reboot.
The pid and boot id are recorded for the operator (``machina queue show``) and the logs.  A process taking
over a dead owner's id keeps the claims it inherits on record until each is recovered, so a second crash
during the takeover loses none of them.

A claim is written to the registry *before* the ``rename`` into ``processing/`` (and taken out again if
the rename loses the race), so a claimed job always has an owner on record.  The registry is rewritten in
place (``pwrite`` of one CRC-checked JSON line; readers retry a torn read), which costs no new inode per
claim, and it is not fsynced: after a power cut every lock is gone and every claim is recovered anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from machina import wirejson
from machina.clock import Clock
from machina.fsutil import ensure_dir
from machina.proctree import pid_alive
from machina.queue.errors import QueueError, WorkerIdInUse
from machina.queue.wal import check_crc, encode

log = logging.getLogger(__name__)

WORKER_ID_RE = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_READ_TRIES = 5
#: how long taking a worker id waits out a lock that no live owner holds (another process probing it)
PROBE_WAIT_S = 2.0


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


BOOT_ID = boot_id()


@dataclass
class Owner:
    worker_id: str
    pid: int = 0
    boot_id: str = ""
    started_ms: int = 0
    heartbeat_ms: int = 0
    claims: dict[str, int] = field(default_factory=dict)  # processing file -> claimed at (epoch ms)
    heartbeat_boot_ms: int = 0  # the last heartbeat on CLOCK_BOOTTIME (0: a registry written before it existed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pid": self.pid,
            "boot_id": self.boot_id,
            "started_ms": self.started_ms,
            "heartbeat_ms": self.heartbeat_ms,
            "heartbeat_boot_ms": self.heartbeat_boot_ms,
            "claims": self.claims,
        }

    def silent_ms(self, clock: Clock) -> int:
        """How long since the owner's last heartbeat: on CLOCK_BOOTTIME when it runs in this boot, else (a
        registry of an older version) on the wall clock, the only clock left to compare."""
        if self.boot_id and self.boot_id == BOOT_ID and self.heartbeat_boot_ms > 0:
            return int(clock.boottime() * 1000) - self.heartbeat_boot_ms
        return int(clock.time() * 1000) - self.heartbeat_ms


def check_worker_id(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not WORKER_ID_RE.fullmatch(worker_id):
        raise QueueError(f"worker id {worker_id!r}: use 1..64 letters, digits or _.@:-")
    return worker_id


def _parse(data: bytes) -> Owner | None:
    line = data.split(b"\n", 1)[0]
    if check_crc(line) is not True:
        return None
    try:
        raw = wirejson.loads(line)
        return Owner(
            str(raw["worker_id"]),
            int(raw["pid"]),
            str(raw["boot_id"]),
            int(raw["started_ms"]),
            int(raw["heartbeat_ms"]),
            {str(k): int(v) for k, v in raw["claims"].items()},
            int(raw.get("heartbeat_boot_ms", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def read_owner_fd(fd: int) -> Owner | None:
    """The registry's content; None when empty or unreadable (a torn read is retried)."""
    for _ in range(_READ_TRIES):
        data = os.pread(fd, max(4096, os.fstat(fd).st_size), 0)
        if not data.strip():
            return None
        owner = _parse(data)
        if owner is not None:
            return owner
    return None


class ClaimRegistry:
    """This process's registry for one worker id.  Thread-safe."""

    def __init__(self, claims_dir: str, worker_id: str, clock: Clock) -> None:
        self.worker_id = check_worker_id(worker_id)
        self.path = os.path.join(claims_dir, f"{worker_id}.json")
        self.clock = clock
        self._lock = threading.Lock()
        ensure_dir(claims_dir)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock_id(self._fd, worker_id)
        except BaseException:
            os.close(self._fd)
            raise
        previous = read_owner_fd(self._fd)
        #: what the previous (dead) holder of this worker id still had claimed
        self.orphans: list[str] = sorted(previous.claims) if previous else []
        now = self._now()
        # The predecessor's claims stay on record until each is recovered (see :meth:`remove`): a process
        # killed right after taking the id over must leave them for the next one, not an empty registry
        # (a claim no registry lists is recovered only after MACHINA_CLAIM_TIMEOUT_MS).
        self.owner = Owner(worker_id, os.getpid(), BOOT_ID, now, now, dict(previous.claims) if previous else {})
        self._write()

    def add(self, file: str) -> None:
        with self._lock:
            self.owner.claims[file] = self._now()
            self._write()

    def remove(self, file: str) -> None:
        """Forget a claim.  A failed write is only logged: a stale entry names a file no longer in
        processing/, which recovery skips."""
        with self._lock:
            if self.owner.claims.pop(file, None) is not None:
                try:
                    self._write()
                except OSError as exc:
                    log.warning("claim registry %s: cannot record that %s was released: %s", self.path, file, exc)

    def heartbeat(self) -> None:
        with self._lock:
            self._write()

    def holds(self, file: str) -> bool:
        return file in self.owner.claims

    def close(self) -> None:
        """Release the id (closing the last descriptor of the open file drops the flock)."""
        fd, self._fd = self._fd, -1  # forgotten first, as in machina.queue.inotify
        if fd >= 0:
            os.close(fd)

    def _now(self) -> int:
        return int(self.clock.time() * 1000)

    def _write(self) -> None:
        self.owner.heartbeat_ms = self._now()
        self.owner.heartbeat_boot_ms = int(self.clock.boottime() * 1000)
        data = encode(self.owner.as_dict(), crc=True)
        os.pwrite(self._fd, data, 0)


def _lock_id(fd: int, worker_id: str) -> None:
    """Take the id's lock, or raise WorkerIdInUse when a live owner holds it.  A recovery sweep in another
    process probes every registry by taking its lock for a moment (:func:`foreign_registry`): a lock held
    while the registry names no live owner is waited out, up to :data:`PROBE_WAIT_S`."""
    deadline = time.monotonic() + PROBE_WAIT_S  # a kernel lock held by another process: real time
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = read_owner_fd(fd)
            live = holder is not None and holder.boot_id == BOOT_ID and pid_alive(holder.pid)
            if live or time.monotonic() >= deadline:
                pid = f" (pid {holder.pid})" if holder else ""
                raise WorkerIdInUse(f"worker id {worker_id!r} is in use by another live process{pid}") from None
            time.sleep(0.01)


@contextlib.contextmanager
def foreign_registry(path: str) -> Iterator[tuple[Owner | None, bool, int]]:
    """Open another worker's registry: (owner, dead, fd).  ``dead`` means we got its lock, so its process is
    gone and we may rewrite it (fd is then locked by us until the block ends)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            dead = True
        except BlockingIOError:
            dead = False
        yield read_owner_fd(fd), dead, fd
    finally:
        os.close(fd)


def clear_claims(fd: int, owner: Owner) -> None:
    """Empty a dead owner's claim list (we hold its lock)."""
    owner.claims = {}
    data = encode(owner.as_dict(), crc=True)
    os.pwrite(fd, data, 0)


def list_registries(claims_dir: str) -> list[str]:
    try:
        return sorted(
            os.path.join(claims_dir, n)
            for n in os.listdir(claims_dir)
            if n.endswith(".json") and WORKER_ID_RE.fullmatch(n[:-5])
        )
    except FileNotFoundError:
        return []

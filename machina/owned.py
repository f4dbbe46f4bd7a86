"""Directories and files a process owns for its lifetime, and the sweep of those a killed owner left.

A daemon's scratch (the toolhost's /etc copy, a tool's private directory) lives in ``<parent>/<prefix>.<pid>``
with an ``flock`` held on a file inside it for the owner's whole life.  A clean stop removes it; a SIGKILL
cannot, so the next start sweeps: an entry is removed only when its lock is free (or missing) *and* the pid
its name carries is not running.  Anything that is not a plain directory of our own uid is left alone and
reported, never followed: a stale name may have been planted by someone else.

The same pid-in-the-name rule covers temporary files of atomic writes and sockets being bound
(:func:`sweep_temps`): ``.<name>.<pid>-<hex>.tmp`` whose pid is gone is garbage.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from machina.exitcodes import ExitCode, MachinaError
from machina.proctree import pid_alive

log = logging.getLogger(__name__)

LOCK_NAME = ".owner.lock"
# A place that cannot take a new file (read-only, full, over quota): exit 73, EX_CANTCREAT.
NO_ROOM = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT})
DENIED = frozenset({errno.EACCES, errno.EPERM})


def cannot_create(path: str, exc: OSError) -> MachinaError:
    """The operator's one line for a failed creation: exit 73 when there is no room, 77 when not allowed."""
    code = ExitCode.CANTCREAT if exc.errno in NO_ROOM else ExitCode.NOPERM if exc.errno in DENIED else ExitCode.OSERR
    return MachinaError(f"cannot create {path}: {exc.strerror or exc}", code)


@contextlib.contextmanager
def creating() -> Iterator[None]:
    """Turn an OSError about a path (read-only, full, not allowed) into the operator's one line.

    For start-up code: a read-only or full place stops the daemon with a message naming the path and exit
    73, a refused one with exit 77, never a traceback.  Errors that name no path pass through unchanged.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is None or exc.errno not in NO_ROOM | DENIED:
            raise
        if exc.errno in NO_ROOM:
            raise cannot_create(str(exc.filename), exc) from None
        raise MachinaError(f"{exc.filename}: {exc.strerror}", ExitCode.NOPERM) from None


def temp_root() -> str:
    """$TMPDIR, else /tmp: where per-process scratch goes when no runtime directory will do.

    Not :func:`tempfile.gettempdir`, which quietly moves on to /var/tmp or the working directory when
    $TMPDIR cannot be written: a read-only or full /tmp must stop a start with its name, not scatter files.
    """
    configured = os.environ.get("TMPDIR", "")
    return configured if os.path.isabs(configured) else "/tmp"  # noqa: S108 - the documented default


@dataclass
class SweepReport:
    removed: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # not ours, or not a plain directory: left, reported


def _owned_name(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"\.(\d+)")


def sweep(parent: str, prefix: str) -> SweepReport:
    """Remove ``<parent>/<prefix>.<pid>`` directories whose owner is gone; report what is left and why."""
    report = SweepReport()
    pattern = _owned_name(prefix)
    try:
        names = os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return report
    me = os.geteuid()
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        path = os.path.join(parent, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != me:
            log.warning("left alone %s: not a directory of uid %d (uid %d); remove it by hand", path, me, info.st_uid)
            report.foreign.append(path)
            continue
        if _owner_alive(path, int(match.group(1))):
            report.live.append(path)
            continue
        shutil.rmtree(path, ignore_errors=True)  # rmtree never follows symlinks inside (fd-based on Linux)
        log.info("removed %s, left by a process that no longer runs", path)
        report.removed.append(path)
    return report


def _owner_alive(path: str, pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own pid on a directory we have not made yet: a predecessor with a reused pid
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return pid_alive(pid)  # killed between mkdir and lock: the pid alone decides
    except OSError:
        return True  # unreadable lock: assume an owner
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return pid_alive(pid)  # lock free, but never remove what a running pid still names


class OwnedDir:
    """``<parent>/<prefix>.<pid>``: made by :meth:`create` (after sweeping dead ones), gone after :meth:`close`."""

    def __init__(self, parent: str, prefix: str, mode: int = 0o700) -> None:
        self.parent = parent
        self.prefix = prefix
        self.mode = mode
        self.path = os.path.join(parent, f"{prefix}.{os.getpid()}")
        self._lock_fd: int | None = None

    def create(self) -> str:
        """Sweep, then make the directory and lock it; MachinaError (exit 73) when the parent refuses."""
        if self._lock_fd is not None:
            return self.path
        try:
            os.makedirs(self.parent, mode=0o700, exist_ok=True)
            sweep(self.parent, self.prefix)
            if os.path.lexists(self.path):
                shutil.rmtree(self.path)  # a same-pid predecessor's (sweep above found its owner gone)
            os.mkdir(self.path, self.mode)
            os.chmod(self.path, self.mode)  # mkdir applies the umask
            fd = os.open(os.path.join(self.path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise cannot_create(exc.filename or self.path, exc) from None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        return self.path

    def close(self) -> None:
        if self._lock_fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_fd = None


_PID_TEMP = re.compile(r"\.(?:.+\.)?(\d+)-[0-9a-f]+\.tmp")


def temp_name(path: str, *, short: bool = False) -> str:
    """A hidden sibling of ``path`` that names this process: ``.<base>.<pid>-<hex>.tmp``.

    ``short`` leaves the base out (``.<pid>-<hex>.tmp``), for socket paths and their 108-byte limit.
    """
    directory, base = os.path.split(path)
    name = (
        f".{os.getpid()}-{secrets.token_hex(3)}.tmp" if short else f".{base}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
    )
    return os.path.join(directory, name)


def sweep_temps(directory: str) -> list[str]:
    """Remove temporary files (:func:`temp_name`) in ``directory`` whose writer no longer runs."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    me = os.geteuid()
    for name in names:
        match = _PID_TEMP.fullmatch(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(path)
            if info.st_uid != me or stat.S_ISDIR(info.st_mode):
                log.warning("left alone %s: not a file of uid %d", path, me)
                continue
            os.unlink(path)
            removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) in %s left by stopped processes", len(removed), directory)
    return removed


_scratch: dict[str, OwnedDir] = {}
_scratch_lock = threading.Lock()


def scratch_dir(prefix: str, mode: int = 0o700) -> str:
    """This process's ``$TMPDIR/<prefix>.<pid>`` (made on first use, after sweeping dead owners' ones),
    for short-lived private directories made inside it; removed by :func:`close_scratch` or at exit."""
    with _scratch_lock:
        owned = _scratch.get(prefix)
        if owned is None:
            if not _scratch:
                atexit.register(close_scratch)
            owned = _scratch[prefix] = OwnedDir(temp_root(), prefix, mode)
        return owned.create()


def close_scratch(prefix: str | None = None) -> None:
    """Remove this process's scratch directory ``prefix`` (every one when None): part of a clean stop."""
    with _scratch_lock:
        for name in [prefix] if prefix is not None else list(_scratch):
            owned = _scratch.pop(name, None)
            if owned is not None:
                owned.close()

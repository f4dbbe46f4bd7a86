"""The queue's hot-path durability: new files placed without replacing, and group commit of fsyncs.

:mod:`machina.fsutil` is the suite's durable-write helper and the queue uses it for everything that is not
on the per-job path (checkpoint, claims).  Per job, two things differ: a job file must never *replace* an
existing one (two enqueuers that drew the same name must not lose a job), and the directory fsyncs of many
concurrent threads must be shared.  So:

* :func:`create_new` writes a file that must not exist yet and hands back its descriptor to be fsynced;
* :func:`place` moves it into its directory with ``renameat2(RENAME_NOREPLACE)`` (``link`` + ``unlink``
  where the file system lacks it);
* :class:`GroupCommit` makes the new files, the directory entries and the WAL durable for every thread
  waiting at the time: the first waiter syncs for all the others that arrived meanwhile (the classic
  leader/follower group commit), issuing the fsyncs together so the file system merges them into one
  journal commit, so fsync-on throughput is not one flush per job.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from machina.fsutil import PRIVATE_FILE

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def _load_syncfs() -> Callable[..., int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_syncfs = _load_syncfs()


def syncfs(path: str) -> None:
    """Write back everything dirty on the file system holding ``path`` (``syncfs(2)``; ``sync()`` where the
    C library lacks it): one call instead of an fsync per file written without one."""
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)


def place(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` atomically, failing with FileExistsError instead of replacing ``dst``."""
    global _renameat2
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), src, None, dst)
        _renameat2 = None  # this file system cannot: link + unlink from now on
    os.link(src, dst)
    os.unlink(src)


def create_new(path: str, data: bytes, mode: int = PRIVATE_FILE) -> int:
    """Create ``path`` (which must not exist) holding ``data``; return its open fd (the caller fsyncs it,
    through :class:`GroupCommit`, and closes it).  On error nothing is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return fd


class GroupCommit:
    """Shares fsyncs among concurrent threads (leader/follower group commit).

    ``sync(dirs=..., fds=..., wal=...)`` returns once every directory in ``dirs``, every file descriptor in
    ``fds`` and (with ``wal``) the WAL have been fsynced *after* the call began.  The first caller to find
    no sync running becomes the leader: it takes everything requested so far and fsyncs it all *at once*
    from a small thread pool, so the file system folds them into one journal commit and one cache flush,
    then wakes every waiter it covered.  Callers arriving meanwhile form the next batch.

    An fsync error (or any other failure of the batch, as EIO) is raised to every waiter of that batch; the
    WAL handles its own errors (it is an aid to restart, not the record of a job, so its failure must not
    fail an enqueue that is on disk).
    """

    POOL_THREADS = 8

    def __init__(self, wal_sync: Callable[[], None] | None = None) -> None:
        self._wal_sync = wal_sync
        self._cond = threading.Condition(threading.Lock())
        self._dirs: set[str] = set()
        self._fds: list[int] = []
        self._wal = False
        self._requested = 0
        self._synced = 0
        self._leader = False
        self._failures: list[tuple[int, int, OSError]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._dir_fds: dict[str, int] = {}  # only the leader (one at a time) opens and reads these
        self.batches = 0
        self.requests = 0

    def sync(self, dirs: Iterable[str] = (), fds: Iterable[int] = (), wal: bool = True) -> None:
        with self._cond:
            self._dirs.update(dirs)
            self._fds.extend(fds)
            self._wal = self._wal or wal
            self._requested += 1
            self.requests += 1
            ticket = self._requested
            while self._synced < ticket:
                if self._leader:
                    self._cond.wait()
                    continue
                self._lead()
            failure = next((e for lo, hi, e in self._failures if lo < ticket <= hi), None)
        if failure is not None:
            raise failure

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        fds, self._dir_fds = self._dir_fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _dir_fd(self, path: str) -> int:
        """The directory opened once and kept (an open and a close per request cost as much as its fsync)."""
        fd = self._dir_fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._dir_fds[path] = fd
        return fd

    def after_fork_in_child(self) -> None:
        """The pool's threads did not survive the fork, and a lock may have been held by one that did not."""
        self._pool = None
        self._cond = threading.Condition(threading.Lock())
        self._leader = False

    def _lead(self) -> None:
        """Called with the lock held; releases it while syncing."""
        self._leader = True
        dirs, fds, wal, upto, low = self._dirs, self._fds, self._wal, self._requested, self._synced
        self._dirs, self._fds, self._wal = set(), [], False
        self._cond.release()
        error: OSError | None = None
        try:
            dir_fds = [self._dir_fd(path) for path in sorted(dirs)]
            jobs: list[Callable[[], None]] = [lambda fd=fd: os.fsync(fd) for fd in [*fds, *dir_fds]]  # type: ignore[misc]
            if wal and self._wal_sync is not None:
                jobs.append(self._wal_sync)
            error = self._run(jobs)
        except Exception as exc:
            # Whatever went wrong (a bug, a pool shut down under us), this batch is not synced: every waiter
            # of it must hear so, not only the leader.
            error = _not_synced(exc)
            raise error from exc
        finally:
            if error is None and sys.exc_info()[0] is not None:  # interrupted (KeyboardInterrupt ...)
                error = OSError(errno.EIO, "group commit interrupted")
            self._cond.acquire()
            self._leader = False
            self._synced = upto
            self.batches += 1
            if error is not None:
                self._failures = [*self._failures[-15:], (low, upto, error)]
            self._cond.notify_all()

    def _run(self, jobs: list[Callable[[], None]]) -> OSError | None:
        if len(jobs) == 1:
            return _attempt(jobs[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.POOL_THREADS, thread_name_prefix="machina-fsync")
        errors = [e for e in self._pool.map(_attempt, jobs) if e is not None]
        return errors[0] if errors else None


def _attempt(job: Callable[[], None]) -> OSError | None:
    try:
        job()
    except OSError as exc:
        log.error("fsync failed: %s", exc)
        return exc
    except Exception as exc:  # not an I/O error, yet nothing says the data reached the disk
        log.exception("fsync failed unexpectedly")
        return _not_synced(exc)
    return None


def _not_synced(exc: BaseException) -> OSError:
    """An error that is not an OSError, as the I/O error it means here: the batch was not synced."""
    if isinstance(exc, OSError):
        return exc
    return OSError(errno.EIO, f"group commit failed: {type(exc).__name__}: {exc}")

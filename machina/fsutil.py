"""Durable file primitives: the one helper every component uses when a file must survive a crash.

The recipe (as borg does it): write a temporary file in the target's directory, flush and fsync it, rename
it over the target, then fsync the directory so the rename itself is on disk.  With ``fsync=False`` the
same steps run without the fsyncs: the result is still atomic (readers see the old or the new file, never a
torn one) but a power cut may lose it.  That is what ``MACHINA_WAL_FSYNC=0`` means.
"""

from __future__ import annotations

import contextlib
import os
import secrets

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def fsync_dir(path: str) -> None:
    """Make the directory's entries (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, *, fsync: bool, mode: int = PRIVATE_FILE, tmp_dir: str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; durable before returning when ``fsync``.

    ``tmp_dir`` must be on the same file system as ``path``; by default the temporary file sits beside it
    with a dot name.  On any error the temporary file is removed and the old content stays.
    """
    directory = os.path.dirname(path) or "."
    # The name carries our pid, so a start after a SIGKILL can tell garbage from a write in flight
    # (machina.owned.sweep_temps; same format as machina.owned.temp_name).
    tmp = os.path.join(tmp_dir or directory, f".{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # write(2) and fsync(2) errors name no file
            raise OSError(exc.errno, exc.strerror, path) from exc
        raise
    if fsync:
        fsync_dir(directory)


def rename(src: str, dst: str, *, fsync: bool) -> None:
    """Move ``src`` to ``dst`` in one atomic step; with ``fsync`` both directories are synced."""
    os.rename(src, dst)
    if fsync:
        dst_dir = os.path.dirname(dst) or "."
        src_dir = os.path.dirname(src) or "."
        fsync_dir(dst_dir)
        if os.path.realpath(src_dir) != os.path.realpath(dst_dir):
            fsync_dir(src_dir)


def ensure_dir(path: str, mode: int = PRIVATE_DIR) -> bool:
    """Create ``path`` (and parents) with ``mode`` if missing; return True when it was created."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)  # makedirs applies the umask; the layout's modes are a promise
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_file(path: str, chunk: int = 1 << 16) -> bytes:
    """The whole file: open, read until the end, close.  ``open(path, "rb").read()`` makes five more system
    calls for the same bytes (two fstat, a TCGETS ioctl, two lseek), and a worker reads a job file per claim."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while block := os.read(fd, chunk):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)

"""A minimal inotify(7) binding through ctypes: enough to learn within milliseconds that a job arrived.

Only what the queue needs: watch directories, read (wd, mask, name) events without blocking.  When
inotify is unavailable (no libc symbol, out of instances or watches), :func:`open_inotify` returns None and
the queue falls back to rescanning every ``MACHINA_SERVE_SCAN_MS``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct

log = logging.getLogger(__name__)

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")


class Inotify:
    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return wd

    def read_events(self) -> list[tuple[int, int, str]]:
        """Pending events as (wd, mask, name); empty when none are waiting."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0").decode("utf-8", "surrogateescape")
            offset += length
            events.append((wd, mask, name))
        return events

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1  # forgotten first: a fork in between must not see a number we let go of
        if fd >= 0:
            os.close(fd)


def open_inotify() -> Inotify | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init = libc.inotify_init1
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    fd = int(init(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        log.warning("inotify unavailable (%s): falling back to rescans", os.strerror(err))
        return None
    return Inotify(libc, fd)

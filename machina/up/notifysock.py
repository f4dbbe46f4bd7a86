"""The supervisor's side of sd_notify(3): a datagram socket children send READY=1 / WATCHDOG=1 / STOPPING=1 to.

Children find it in ``NOTIFY_SOCKET`` as they would under systemd (``machina.notify.Notifier`` is the
sending side).  ``SO_PASSCRED`` makes the kernel attach each sender's pid, so a message counts only for the
main process it comes from (systemd's ``NotifyAccess=main``): a tool or a policy driver cannot fake it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("iII")  # pid, uid, gid
MAX_MESSAGE = 4096


@dataclass(frozen=True)
class Notification:
    pid: int
    fields: dict[str, str]


class NotifySocket:
    def __init__(self, path: str) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a supervisor that was killed; the caller holds the runtime dir's lock
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)
        os.chmod(path, 0o600)  # only processes of our own user may notify

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[Notification]:
        """Every message waiting now (never blocks)."""
        out: list[Notification] = []
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return out
            pid = _sender_pid(ancdata)
            if pid is not None:
                out.append(Notification(pid, parse_notification(data)))

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def parse_notification(data: bytes) -> dict[str, str]:
    fields = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


def _sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, raw in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(raw) >= _UCRED.size:
            pid, _, _ = _UCRED.unpack(raw[: _UCRED.size])
            return int(pid)
    return None

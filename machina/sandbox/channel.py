"""The toolhost <-> executor channel: length-prefixed JSON frames on a Unix socketpair, with descriptors.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON.  Descriptors (SCM_RIGHTS) ride
on the frame's first bytes, so the receiver picks them up with the header.  Length prefixes rather than
lines because file contents and HTTP bodies travel in these frames.  The receiver bounds the length
before reading a byte of the body: a compromised executor cannot make the toolhost allocate without limit.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from machina import wirejson

HEADER = struct.Struct(">I")
MAX_FDS = 4
DEFAULT_MAX_FRAME = 96 * 1024 * 1024
#: a plain int: ``socket.MSG_CTRUNC`` is an enum.Flag, whose ``&`` runs Python code (1 us, every frame)
_CTRUNC = int(socket.MSG_CTRUNC)


class ChannelError(Exception):
    """The other end closed, sent something that is not a frame, or sent too much."""


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    body = wirejson.dumps(message)
    frame = HEADER.pack(len(body)) + body
    try:
        sent = socket.send_fds(sock, [frame], list(fds)) if fds else sock.send(frame)
        if sent < len(frame):
            sock.sendall(frame[sent:])
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise ChannelError(f"peer went away ({exc.strerror})") from None


def recv(sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[dict[str, Any], list[int]]:
    """The next frame and the descriptors that came with it (the caller owns and must close them)."""
    header, fds = _recv_header(sock)
    try:
        (length,) = HEADER.unpack(header)
        if length > max_frame:
            raise ChannelError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")
        body = _recv_exact(sock, length)
        message = wirejson.loads(body)  # an executor may be compromised: orjson is the stricter parser
        if not isinstance(message, dict):
            raise ChannelError("frame is not a JSON object")
        return message, fds
    except (ChannelError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        raise ChannelError(str(exc)) from None


def _recv_header(sock: socket.socket) -> tuple[bytes, list[int]]:
    data, fds, flags, _ = socket.recv_fds(sock, HEADER.size, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        raise ChannelError("peer closed the channel")
    if flags & _CTRUNC:
        for fd in fds:
            os.close(fd)
        raise ChannelError("too many descriptors in one frame")
    if len(data) < HEADER.size:
        data += _recv_exact(sock, HEADER.size - len(data))
    return data, list(fds)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise ChannelError("peer closed the channel in the middle of a frame")
        buf += chunk
    return bytes(buf)

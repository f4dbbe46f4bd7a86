"""Where machina-enqueued listens: systemd's sockets, a Unix socket, or host:port (in that order).

Sockets are bound here, before READY=1, so a port in use or a bad address stops the start with a clear
error instead of a daemon that reports ready and serves nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from machina.exitcodes import ExitCode, MachinaError
from machina.ipc import activation
from machina.ipc.jsonlines import bind_unix

BACKLOG = 2048
#: Owner and group may connect; the unit's group decides who that is.
SOCKET_MODE = 0o660


@dataclass
class Listeners:
    sockets: list[socket.socket]
    #: Where we listen, for the log and ``systemctl status`` (``http://127.0.0.1:8080``, ``unix:/run/x``).
    addresses: list[str]
    #: A Unix socket file we created and must remove at exit.
    owned_path: str | None = None
    activated: bool = False
    closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()
        if self.owned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.owned_path)


def open_listeners(host: str, port: int, socket_path: str | None) -> Listeners:
    activated = activation.listen_sockets()
    if activated:
        for sock in activated:
            sock.setblocking(False)
        return Listeners(activated, [describe(s) for s in activated], activated=True)
    if socket_path:
        try:
            sock = bind_unix(socket_path, SOCKET_MODE, BACKLOG)
        except OSError as exc:
            raise MachinaError(f"cannot listen on {socket_path}: {exc.strerror or exc}", ExitCode.CANTCREAT) from None
        # getsockname() would name the temporary path bind_unix bound before renaming it into place.
        return Listeners([sock], [f"unix:{socket_path}"], owned_path=socket_path)
    sock = bind_tcp(host, port)
    return Listeners([sock], [describe(sock)])


def bind_tcp(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MachinaError(f"cannot resolve MACHINA_API_HOST={host!r}: {exc.strerror}", ExitCode.CONFIG) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise MachinaError(f"cannot listen on {host} port {port}: {reason}", ExitCode.UNAVAILABLE) from None
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname() or '?'}"
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

"""Newline-delimited JSON RPC over a Unix stream socket: one request object per line, one reply per line.

Used by machina-toolhost and machina-embed.  The server checks every peer with SO_PEERCRED before reading
a byte, bounds line length, and answers malformed input with an error reply instead of dropping the
connection silently.  Each connection is served by its own thread; requests on one connection are
answered in order.

Bounded (:class:`ServerLimits`, MACHINA_IPC_*): at most ``max_per_uid`` connections of one uid and
``max_total`` in all (one thread each); a connection past either cap gets one ``busy`` reply and is
closed.  A connection idle between requests for ``idle_timeout_s`` (or a peer that does not read its
reply for as long) is closed; :class:`JsonLineClient` notices an idle close and reconnects.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from machina import wirejson
from machina.audit.canonical import loads_strict
from machina.exitcodes import ExitCode, MachinaError
from machina.ipc.peercred import PeerCred, peer_cred
from machina.owned import cannot_create, temp_name

log = logging.getLogger(__name__)

DEFAULT_MAX_LINE = 8 * 1024 * 1024
Handler = Callable[[dict[str, Any], PeerCred], dict[str, Any]]
Authorizer = Callable[[PeerCred], bool]
BUSY = "busy"


@dataclass(frozen=True)
class ServerLimits:
    """Caps of one server: connections (threads) per peer uid and in all, and idle time per connection."""

    max_per_uid: int = 64  #: MACHINA_IPC_MAX_CONNECTIONS_PER_UID
    max_total: int = 1024  #: MACHINA_IPC_MAX_CONNECTIONS
    idle_timeout_s: float = 600.0  #: MACHINA_IPC_IDLE_TIMEOUT_MS

    @classmethod
    def from_config(cls, cfg: Any) -> ServerLimits:
        return cls(
            cfg["MACHINA_IPC_MAX_CONNECTIONS_PER_UID"],
            cfg["MACHINA_IPC_MAX_CONNECTIONS"],
            cfg["MACHINA_IPC_IDLE_TIMEOUT_MS"] / 1000.0,
        )


class ServiceUnavailable(MachinaError):
    exit_code = ExitCode.UNAVAILABLE


class ProtocolError(MachinaError):
    exit_code = ExitCode.PROTOCOL


def bind_unix(path: str, mode: int = 0o660, backlog: int = 128) -> socket.socket:
    """Listen on ``path`` with ``mode`` from the first instant (bound under a temporary name, then renamed).

    A stale socket file left by a dead server is replaced; a live one is an error.
    """
    if os.path.exists(path):
        if _is_listening(path):
            raise ServiceUnavailable(f"{path}: another server is already listening", ExitCode.CANTCREAT)
        try:
            os.unlink(path)  # stale: left by a server that was killed
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise cannot_create(path, exc) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = temp_name(path, short=True)  # names our pid: a start after a SIGKILL sweeps it (owned.sweep_temps)
    try:
        try:
            sock.bind(tmp)
        except OSError as exc:
            raise cannot_create(path, exc) from None
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sock.listen(backlog)
    return sock


def _is_listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class JsonLineServer:
    def __init__(
        self,
        listener: socket.socket,
        handler: Handler,
        authorize: Authorizer,
        max_line: int = DEFAULT_MAX_LINE,
        owned_path: str | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.listener = listener
        self.handler = handler
        self.authorize = authorize
        self.max_line = max_line
        self.owned_path = owned_path  # unlinked on close; None for a socket systemd owns
        self.limits = limits or ServerLimits()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._per_uid: Counter[int] = Counter()
        self.refused_busy = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.connections_total = 0

    def serve(self, stop: threading.Event, poll: float = 0.2) -> None:
        """Accept connections until ``stop`` is set."""
        try:
            self.listener.settimeout(poll)
        except OSError:
            return  # closed before serving began
        while not stop.is_set() and not self._closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if stop.is_set() or exc.errno == errno.EBADF:
                    break
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("accept failed: %s; backing off", exc)
                    stop.wait(poll)
                    continue
                raise
            self._start_connection(conn)

    def _start_connection(self, conn: socket.socket) -> None:
        try:
            peer = peer_cred(conn)
        except OSError:
            conn.close()
            return
        thread = threading.Thread(target=self._serve_connection, args=(conn, peer), daemon=True, name="ipc-conn")
        with self._lock:
            why = self._over_limit(peer.uid)
            if why is None:
                self._connections[thread] = conn
                self._per_uid[peer.uid] += 1
                self.connections_total += 1
            else:
                self.refused_busy += 1
        if why is not None:
            log.warning("refused a connection of uid %d: %s", peer.uid, why)
            _refuse(conn, {"ok": False, "status": BUSY, "error": why})
            return
        thread.start()

    def _over_limit(self, uid: int) -> str | None:
        """Why one more connection of ``uid`` is one too many (called with the lock held), or None."""
        if self._per_uid[uid] >= self.limits.max_per_uid:
            return f"too many connections of uid {uid} (MACHINA_IPC_MAX_CONNECTIONS_PER_UID={self.limits.max_per_uid})"
        if len(self._connections) >= self.limits.max_total:
            return f"too many connections (MACHINA_IPC_MAX_CONNECTIONS={self.limits.max_total})"
        return None

    def _serve_connection(self, conn: socket.socket, peer: PeerCred) -> None:
        try:
            # Bounds both the wait for the next request and a peer that does not read its reply.
            conn.settimeout(self.limits.idle_timeout_s)
            if not self.authorize(peer):
                log.warning("refused peer pid=%d uid=%d gid=%d", peer.pid, peer.uid, peer.gid)
                _send(conn, {"ok": False, "status": "forbidden", "error": f"peer uid {peer.uid} is not allowed"})
                return
            reader = conn.makefile("rb")  # buffered: one read per chunk, not one per byte
            while not self._closing.is_set():
                line = reader.readline(self.max_line + 1)
                if not line:
                    return
                if len(line) > self.max_line and not line.endswith(b"\n"):
                    _send(conn, {"ok": False, "status": "bad_request", "error": "request line too long"})
                    return
                _send(conn, self._dispatch(line, peer))
        except (ConnectionError, BrokenPipeError):
            pass
        except TimeoutError:
            log.debug("closed a connection of uid %d idle for %g s", peer.uid, self.limits.idle_timeout_s)
        except Exception:
            log.exception("connection handler failed")
        finally:
            conn.close()
            with self._lock:
                if self._connections.pop(threading.current_thread(), None) is not None:
                    self._per_uid[peer.uid] -= 1
                    if self._per_uid[peer.uid] <= 0:
                        del self._per_uid[peer.uid]

    def _dispatch(self, line: bytes, peer: PeerCred) -> dict[str, Any]:
        try:
            request = loads_strict(line)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return {"ok": False, "status": "bad_request", "error": f"not JSON: {exc}"}
        if not isinstance(request, dict):
            return {"ok": False, "status": "bad_request", "error": "request must be a JSON object"}
        try:
            return self.handler(request, peer)
        except MachinaError as exc:
            return {"ok": False, "status": "error", "error": str(exc)}
        except Exception as exc:
            log.exception("request handler failed")
            return {"ok": False, "status": "internal_error", "error": type(exc).__name__}

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout`` in all), remove the socket we made.

        Shutting down the read side wakes every connection waiting for its next request at once, while a
        handler that is busy still writes its reply before it sees the end of input.
        """
        self._closing.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        if self.owned_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.owned_path)
        with self._lock:
            connections = list(self._connections.items())
        for _, conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + timeout
        for thread, _ in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    conn.sendall(wirejson.dumps(obj) + b"\n")


def _refuse(conn: socket.socket, obj: dict[str, Any]) -> None:
    """One reply to a fresh connection, without ever blocking the accept loop, then close."""
    try:
        conn.setblocking(False)
        conn.send(wirejson.dumps(obj) + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when an idle connection has been closed by the server (readable, and a peek sees the end)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class JsonLineClient:
    """A persistent connection to a JSON-lines server.  Not thread-safe: one per thread."""

    def __init__(self, path: str, timeout: float = 30.0, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.path = path
        self.timeout = timeout
        self.max_line = max_line
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ServiceUnavailable(f"{self.path}: service not running ({exc.strerror})") from None
        except OSError:
            sock.close()
            raise
        self._sock, self._reader = sock, sock.makefile("rb")

    def call(self, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        payload = wirejson.dumps(request) + b"\n"
        if self._sock is not None and _closed_by_peer(self._sock):
            self.close()  # the server went away (restart, idle close) while we were not talking: nothing lost
        for attempt in (1, 2):
            if self._sock is None:
                self._connect()
            assert self._sock is not None
            self._sock.settimeout(timeout or self.timeout)
            try:
                self._sock.sendall(payload)
                break
            except (BrokenPipeError, ConnectionResetError):
                # A server that refuses a peer answers at once and closes, maybe before we sent: its answer
                # is still queued here.  Without one, it closed an idle connection: one fresh try is safe.
                left_behind = self._read_line_left_behind()
                if left_behind:
                    return self._parse(left_behind)
                self.close()
                if attempt == 2:
                    raise ServiceUnavailable(f"{self.path}: connection lost") from None
        try:
            line = self._reader.readline(self.max_line + 1)
        except TimeoutError:
            self.close()
            raise ServiceUnavailable(
                f"{self.path}: no reply within {timeout or self.timeout:g}s", ExitCode.TEMPFAIL
            ) from None
        if not line:
            self.close()
            raise ServiceUnavailable(f"{self.path}: server closed the connection without a reply")
        return self._parse(line)

    def _read_line_left_behind(self) -> bytes:
        """What a server that has closed on us sent before it closed (it cannot block: the peer is gone)."""
        try:
            return bytes(self._reader.readline(self.max_line + 1))
        except OSError:
            return b""

    def _parse(self, line: bytes) -> dict[str, Any]:
        try:
            reply = wirejson.loads(line)
        except ValueError:
            self.close()
            raise ProtocolError(f"{self.path}: reply is not JSON") from None
        if not isinstance(reply, dict):
            raise ProtocolError(f"{self.path}: reply is not a JSON object")
        return reply

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._reader = None

    def __enter__(self) -> JsonLineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

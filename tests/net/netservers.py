"""Real servers on loopback for the machina.net tests: an HTTP(S) server with a few routes, and raw TCP
servers that misbehave (never answer, trickle bytes).  Every server binds port 0 (or a port the test picked
free) and is shut down at teardown."""

from __future__ import annotations

import contextlib
import functools
import gzip
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Bounds so that a misbehaving test server can never hold a test for long.
STREAM_LIMIT_BYTES = 64 * 1024 * 1024
TRICKLE_LIMIT_S = 20.0


@dataclass
class Recorded:
    """What a server saw: one entry per request (path and headers) and, for TLS, each SNI name."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.recorded.requests.append({"path": self.path, "headers": dict(self.headers)})
        route = getattr(self, "route_" + url.path.strip("/").replace("-", "_"), None)
        if route is None:
            self._send(404, b"no such route")
        else:
            route(query)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def route_hello(self, query: dict[str, str]) -> None:
        self._send(200, f"hello from {self.server.name}".encode())

    def route_echo_host(self, query: dict[str, str]) -> None:
        self._send(200, (self.headers.get("Host") or "").encode())

    def route_big(self, query: dict[str, str]) -> None:
        self._send(200, b"a" * int(query["n"]))

    def route_redirect(self, query: dict[str, str]) -> None:
        self._send(int(query.get("code", "302")), b"moved", Location=query["to"])

    def route_latin1(self, query: dict[str, str]) -> None:
        self._send(200, "café".encode("latin-1"), "text/plain; charset=ISO-8859-1")

    def route_bad_utf8(self, query: dict[str, str]) -> None:
        self._send(200, b"ok\xff\xfe!", "text/plain; charset=utf-8")

    def route_odd_charset(self, query: dict[str, str]) -> None:
        self._send(200, "naïve".encode(), "text/plain; charset=x-no-such-codec")

    def route_gzip(self, query: dict[str, str]) -> None:
        """A small gzip body that inflates to ``n`` bytes, sent although the client asked for identity."""
        self._send(200, _gzipped_zeros(int(query["n"])), "text/plain", Content_Encoding="gzip")

    def route_stream(self, query: dict[str, str]) -> None:
        """A chunked body that goes on (up to STREAM_LIMIT_BYTES) until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"z" * 4096
        try:
            for _ in range(STREAM_LIMIT_BYTES // len(chunk)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            return  # the client stopped reading: what the test wants
        self.wfile.write(b"0\r\n\r\n")


@functools.cache
def _gzipped_zeros(size: int) -> bytes:
    return gzip.compress(b"0" * size, compresslevel=1)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], name: str, tls: ssl.SSLContext | None) -> None:
        self.name = name
        self.recorded = Recorded()
        self.tls = tls
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, peer = super().get_request()
        if self.tls is None:
            return sock, peer
        sock.settimeout(5)
        return self.tls.wrap_socket(sock, server_side=True), peer  # a failed handshake is an OSError: dropped


@dataclass
class RunningServer:
    server: Server
    host: str

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def recorded(self) -> Recorded:
        return self.server.recorded


Behaviour = Callable[[socket.socket, threading.Event], None]


class RawServers:
    """Raw TCP servers on loopback: each connection is served by ``behaviour(conn, stop)`` in a thread."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._listeners: list[socket.socket] = []

    def start(self, behaviour: Behaviour) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        self._listeners.append(listener)
        threading.Thread(target=self._serve, args=(listener, behaviour), daemon=True).start()
        return int(listener.getsockname()[1])

    def _serve(self, listener: socket.socket, behaviour: Behaviour) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_one, args=(conn, behaviour), daemon=True).start()

    def _serve_one(self, conn: socket.socket, behaviour: Behaviour) -> None:
        with conn, contextlib.suppress(OSError):  # the client hanging up ends the behaviour
            behaviour(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        for listener in self._listeners:
            listener.close()


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and say nothing until the peer leaves or the test ends."""
    conn.settimeout(0.05)
    ends = time.monotonic() + TRICKLE_LIMIT_S
    while not stop.is_set() and time.monotonic() < ends:
        try:
            if conn.recv(4096) == b"":
                return
        except TimeoutError:
            continue


def trickling(head: bytes, every_s: float = 0.05) -> Behaviour:
    """Send ``head``, then one byte every ``every_s`` seconds until the peer leaves or the test ends."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        ends = time.monotonic() + TRICKLE_LIMIT_S
        while not stop.is_set() and time.monotonic() < ends:
            conn.sendall(b"x")
            time.sleep(every_s)

    return behaviour


@dataclass
class Tls:
    """A throwaway CA (trustme) and server contexts holding certificates it issued."""

    ca_bundle: str
    server_context: Callable[..., ssl.SSLContext]

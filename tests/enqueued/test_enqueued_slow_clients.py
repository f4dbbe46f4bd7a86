"""Slow and hostile clients on raw sockets: none of them can hold the server (header and body deadlines,
head size cap), while keep-alive and many concurrent clients keep working."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import requests
from enqueued_kit import TOKEN, bearer, http_exchange, inbox, status_of

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture
def daemon(start_daemon: Any) -> Any:
    return start_daemon(
        MACHINA_API_TOKEN=TOKEN,
        MACHINA_API_HEADER_TIMEOUT_MS=str(int(HEADER_TIMEOUT_S * 1000)),
        MACHINA_API_BODY_TIMEOUT_MS=str(int(BODY_TIMEOUT_S * 1000)),
        MACHINA_API_KEEPALIVE_TIMEOUT_MS="1500",
        MACHINA_API_MAX_HEADER_BYTES="8192",
    )


def wait_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (reading everything it sent meanwhile)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return time.monotonic() - started, received


def test_a_silent_connection_is_closed_after_the_header_timeout(daemon: Any) -> None:
    with daemon.connect() as sock:
        waited, received = wait_closed(sock, 10)
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 3
    assert received == b""  # nothing was asked, nothing is answered


def test_slowloris_headers_are_cut_off_at_the_header_timeout(daemon: Any) -> None:
    """One header byte every 200 ms keeps every per-read timer alive, but not the request deadline."""
    with daemon.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"POST /enqueue HTTP/1.1\r\nHost: x\r\n")
        cut_off = False
        for byte in b"X-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > HEADER_TIMEOUT_S + 3:
                break
        _, received = wait_closed(sock, 5)
    elapsed = time.monotonic() - started
    assert cut_off or received.startswith(b"HTTP/1.1 408 ")
    assert elapsed < HEADER_TIMEOUT_S + 4


def test_a_trickling_body_is_cut_off_at_the_body_timeout(daemon: Any) -> None:
    head = b"POST /enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    with daemon.connect() as sock:
        sock.sendall(head + b"Content-Length: 200\r\n\r\n{")
        started = time.monotonic()
        received = b""
        for _ in range(40):
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                received += sock.recv(4096)
            except TimeoutError:
                continue
            if received:
                break
        _, rest = wait_closed(sock, 5)
    assert status_of(received + rest) == 408
    assert time.monotonic() - started < BODY_TIMEOUT_S + 3
    assert inbox(daemon.root) == []


def test_a_chunked_body_that_never_ends_times_out(daemon: Any) -> None:
    head = b"POST /enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
    with daemon.connect() as sock:
        raw = http_exchange(sock, head + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"goa\r\n', timeout=10)
    assert status_of(raw) == 408


def test_a_huge_request_head_gets_431(daemon: Any) -> None:
    with daemon.connect() as sock:
        raw = http_exchange(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 10000 + b"\r\n\r\n")
    assert status_of(raw) == 431
    with daemon.connect() as sock:
        raw = http_exchange(sock, b"GET /health?" + b"q" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 431
    assert requests.get(daemon.url("/health"), timeout=10).status_code == 200


def read_response(stream: Any) -> bytes:
    """One response with a Content-Length body from a buffered reader (``sock.makefile("rb")``), which keeps
    whatever follows it (the next pipelined response) for the next call."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            raise AssertionError("the server closed a keep-alive connection")
        head += line
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = stream.read(length)
    assert len(body) == length, "the server closed a keep-alive connection mid-answer"
    return head + body


def test_keep_alive_serves_many_requests_on_one_connection(start_daemon: Any) -> None:
    # Default deadlines: only keep-alive and pipelining are under test here.
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN)
    with daemon.connect() as sock, sock.makefile("rb") as stream:
        for i in range(10):
            body = b'{"goal_id":"goal.KA.v1","i":%d}' % i
            sock.sendall(
                b"POST /enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            assert status_of(read_response(stream)) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)  # pipelined
        answers = [read_response(stream) for _ in range(3)]
    assert [status_of(a) for a in answers] == [200, 200, 200]
    assert len(inbox(daemon.root)) == 10


def test_an_idle_keep_alive_connection_is_closed(daemon: Any) -> None:
    with daemon.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        waited, received = wait_closed(sock, 10)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert 1.0 <= waited < 5


def test_slow_clients_do_not_hold_up_others(daemon: Any) -> None:
    """Forty silent or trickling connections at once; a normal client is served meanwhile, then they go."""
    hogs = []
    for i in range(40):
        sock = daemon.connect()
        if i % 2:
            sock.sendall(b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
        hogs.append(sock)
    try:
        started = time.monotonic()
        answer = requests.post(daemon.url("/enqueue"), json={"goal_id": "goal.FAST.v1"}, headers=bearer(), timeout=10)
        assert answer.status_code == 200
        assert time.monotonic() - started < 1.0
        closed = []

        def watch(sock: socket.socket) -> None:
            closed.append(wait_closed(sock, 10)[0])

        threads = [threading.Thread(target=watch, args=(s,)) for s in hogs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(closed) == 40 and max(closed) < HEADER_TIMEOUT_S + 3
    finally:
        for sock in hogs:
            sock.close()

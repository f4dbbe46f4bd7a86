"""The daemon as systemd runs it: socket activation, a Unix socket, sd_notify READY/WATCHDOG/STOPPING."""

from __future__ import annotations

import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from enqueued_kit import TOKEN, bearer, inbox, status_of

#: What systemd does for a socket unit's service: the socket on fd 3, LISTEN_FDS=1, LISTEN_PID=the service's
#: pid (this process execs into it, keeping the pid).
SYSTEMD_LIKE = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"""


def unix_request(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_socket_activation_serves_on_the_passed_socket(start_daemon: Any) -> None:
    """A child started as systemd would: the listening socket on fd 3, LISTEN_FDS=1, LISTEN_PID=its pid."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno() if listener.fileno() != 3 else os.dup(listener.fileno())
    wrapper = (sys.executable, "-c", SYSTEMD_LIKE, str(fd))
    try:
        daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, wrapper=wrapper, popen={"pass_fds": (fd,)})
    finally:
        listener.close()
    assert daemon.address == f"http://127.0.0.1:{port}"
    assert "(socket-activated)" in daemon.log()
    answer = requests.post(f"http://127.0.0.1:{port}/enqueue", json={"goal_id": "g"}, headers=bearer(), timeout=10)
    assert answer.status_code == 200
    assert daemon.stop() == 0


def test_unix_socket(start_daemon: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "run" / "enqueued.sock")
    os.makedirs(os.path.dirname(path))
    daemon = start_daemon(args=("--socket", path), MACHINA_API_TOKEN=TOKEN)
    assert daemon.address == f"unix:{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert b'{"ok":true}' in unix_request(path, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    body = b'{"goal_id":"goal.UNIX.v1"}'
    answer = unix_request(
        path,
        b"POST /enqueue HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    assert status_of(answer) == 200 and len(inbox(daemon.root)) == 1
    assert daemon.stop() == 0
    assert not os.path.exists(path)  # removed at exit


@pytest.fixture
def notify_socket(tmp_path: Path) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(15)
    yield sock
    sock.close()


def test_sd_notify_ready_watchdog_and_stopping(start_daemon: Any, notify_socket: socket.socket) -> None:
    daemon = start_daemon(MACHINA_API_TOKEN=TOKEN, NOTIFY_SOCKET=notify_socket.getsockname(), WATCHDOG_USEC="400000")
    ready = notify_socket.recv(4096).decode().splitlines()
    assert ready[0] == "READY=1" and ready[1] == f"STATUS={daemon.address}"
    assert requests.get(daemon.url("/health"), timeout=5).ok  # READY means accepting
    pings = [notify_socket.recv(4096).decode() for _ in range(3)]
    assert pings == ["WATCHDOG=1"] * 3
    daemon.proc.send_signal(15)
    messages = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(m.startswith("STOPPING=1") for m in messages):
        messages.append(notify_socket.recv(4096).decode())
    assert any(m.startswith("STOPPING=1") for m in messages)
    assert daemon.proc.wait(timeout=15) == 0

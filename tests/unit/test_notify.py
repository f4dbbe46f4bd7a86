"""sd_notify against a real AF_UNIX datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machina.notify import Notifier


@pytest.fixture
def make_notifier() -> Iterator[Callable[[dict[str, str]], Notifier]]:
    """``make_notifier(environ)``: a Notifier, closed after the test (each holds a connected socket)."""
    made: list[Notifier] = []

    def make(environ: dict[str, str]) -> Notifier:
        made.append(Notifier(environ))
        return made[-1]

    yield make
    for notifier in made:
        notifier.close()


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_ready_status_and_stopping(notify_socket, make_notifier: Callable[[dict[str, str]], Notifier]) -> None:
    path, sock = notify_socket
    notifier = make_notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready("listening on 127.0.0.1:8080")
    notifier.status("3 jobs")
    notifier.stopping("bye")
    ready, status, stopping = messages(sock, 3)
    assert ready.splitlines() == ["READY=1", "STATUS=listening on 127.0.0.1:8080", f"MAINPID={os.getpid()}"]
    assert status == "STATUS=3 jobs"
    assert stopping.splitlines() == ["STOPPING=1", "STATUS=bye"]


def test_abstract_socket_address(tmp_path: Path, make_notifier: Callable[[dict[str, str]], Notifier]) -> None:
    name = f"machina-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        make_notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096).decode().startswith("READY=1")
    finally:
        sock.close()


def test_watchdog_pings_at_half_the_timeout_while_healthy(
    notify_socket, make_notifier: Callable[[dict[str, str]], Notifier]
) -> None:
    path, sock = notify_socket
    notifier = make_notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == pytest.approx(0.1)
    notifier.start_watchdog(lambda: True)
    try:
        assert messages(sock, 3) == ["WATCHDOG=1"] * 3
    finally:
        notifier.stop_watchdog()


def test_no_ping_while_unhealthy(notify_socket, make_notifier: Callable[[dict[str, str]], Notifier]) -> None:
    path, sock = notify_socket
    notifier = make_notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    notifier.start_watchdog(lambda: False)
    sock.settimeout(0.5)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        notifier.stop_watchdog()


def test_watchdog_meant_for_another_pid_is_ignored(
    notify_socket, make_notifier: Callable[[dict[str, str]], Notifier]
) -> None:
    path, _ = notify_socket
    notifier = make_notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None


def test_everything_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("y")
    notifier.start_watchdog(lambda: True)
    notifier.stopping()


def test_close_closes_the_socket_and_later_messages_are_dropped(notify_socket) -> None:
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    held = notifier._notifier.socket  # type: ignore[union-attr]
    notifier.close()
    notifier.close()
    assert held.fileno() == -1, "the notify socket is still open"
    assert not notifier.enabled
    notifier.ready("after close")  # dropped, not an error
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)

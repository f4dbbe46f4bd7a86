"""Fixtures for toolhost tests: a real machina-toolhost process on a fresh root (machina.testing.toolhost)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machina.testing.toolhost import RunningToolhost, running_toolhost

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


@pytest.fixture
def toolhost(machina_root: Path) -> Iterator[Callable[..., RunningToolhost]]:
    """``toolhost(**env)`` starts a toolhost on ``machina_root`` with those MACHINA_* settings.

    Calling it again stops the previous one first (a restart on the same root).
    """
    stack = contextlib.ExitStack()
    running: list[contextlib.ExitStack] = []

    def start(args: tuple[str, ...] = (), **env: str) -> RunningToolhost:
        for previous in running:
            previous.close()
        running.clear()
        inner = contextlib.ExitStack()
        host = inner.enter_context(running_toolhost(str(machina_root), env=env, args=args))
        running.append(inner)
        return host

    with stack:
        yield start
        for previous in running:
            previous.close()


@contextlib.contextmanager
def tcp_server(greeting: bytes = b"reached the host") -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 (the port, and what each connection sent first) for reachability tests."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    seen.append(conn.recv(100))
                    conn.sendall(greeting)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        thread.join()
        server.close()

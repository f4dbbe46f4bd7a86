"""Fixtures for the goal engine's tests: a root with sample data, a toolhost double, engines, policy drivers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from engine_support import EXAMPLES, ToolhostDouble, load_cfg

from machina.clock import FakeClock
from machina.engine import Engine
from machina.root import Root


@pytest.fixture
def root(machina_root: Path) -> Path:
    """An initialised root holding examples/data as data/, and an empty policies/ script root."""
    shutil.copytree(EXAMPLES / "data", machina_root / "data")
    (machina_root / "policies").mkdir()
    return machina_root


@pytest.fixture
def double(root: Path) -> ToolhostDouble:
    return ToolhostDouble(str(root))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_engine(root: Path, double: ToolhostDouble, clock: FakeClock) -> Iterator[Callable[..., Engine]]:
    """``make_engine(MACHINA_X="...")``: an engine over the double, configured like the environment would;
    closed at the end of the test."""
    made: list[Engine] = []

    def factory(**env: str) -> Engine:
        made.append(Engine.from_config(load_cfg(root, **env), Root(str(root)), double, clock=clock))
        return made[-1]

    yield factory
    for engine in made:
        engine.close()


@pytest.fixture
def driver(root: Path) -> Callable[[str, str], str]:
    """``driver(name, body)`` writes a Python policy driver into the script root; returns MACHINA_POLICY_CMD."""

    def write(name: str, body: str) -> str:
        path = root / "policies" / name
        path.write_text("import json, os, sys\n" + textwrap.dedent(body))
        return f"{sys.executable} policies/{name}"

    return write


class Witness:
    """A UDP socket on loopback that policy drivers report to.

    A driver runs sandboxed: it can write nothing the test could read, but it shares the host's network, so
    a datagram is how a test learns that (and what) a driver ran.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def python(self, data: str = "b'x'") -> str:
        """A line of Python (for a driver body) sending the bytes ``data`` evaluates to."""
        return f"__import__('socket').socket(2, 2).sendto({data}, ('127.0.0.1', {self.port}))\n"

    def shell(self, word: str = "x") -> str:
        """A line of bash sending ``word``."""
        return f"echo {word} > /dev/udp/127.0.0.1/{self.port}\n"

    def messages(self) -> list[bytes]:
        """What arrived so far (loopback delivers before sendto returns, so a finished driver's are all here)."""
        received = []
        while True:
            try:
                received.append(self.sock.recv(65536))
            except BlockingIOError:
                return received


@pytest.fixture
def witness() -> Iterator[Witness]:
    seen = Witness()
    yield seen
    seen.sock.close()


@pytest.fixture
def toolhost(root: Path) -> Iterator[str]:
    """The real machina-toolhost serving ``root`` on its default socket (stopped after the test)."""
    from tests.conftest import BIN, bin_env

    socket_path = root / "run" / "toolhost.sock"
    log = open(root / "toolhost.log", "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen([str(BIN / "machina-toolhost"), "--root", str(root)], env=bin_env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert proc.poll() is None, (root / "toolhost.log").read_text()
            assert time.monotonic() < deadline, "machina-toolhost did not start"
            time.sleep(0.05)
        yield str(socket_path)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()

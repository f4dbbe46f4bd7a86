"""Fixtures for the goal engine's tests: a root with sample data, a toolhost double, engines, policy drivers."""

from __future__ import annotations

import shutil
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
def make_engine(root: Path, double: ToolhostDouble, clock: FakeClock) -> Callable[..., Engine]:
    """``make_engine(MACHINA_X="...")``: an engine over the double, configured like the environment would."""

    def factory(**env: str) -> Engine:
        return Engine.from_config(load_cfg(root, **env), Root(str(root)), double, clock=clock)

    return factory


@pytest.fixture
def driver(root: Path) -> Callable[[str, str], str]:
    """``driver(name, body)`` writes a Python policy driver into the script root; returns MACHINA_POLICY_CMD."""

    def write(name: str, body: str) -> str:
        path = root / "policies" / name
        path.write_text("import json, os, sys\n" + textwrap.dedent(body))
        return f"{sys.executable} policies/{name}"

    return write


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

"""Fixtures for the worker's tests: a Suite (root, the real machina-toolhost, real worker processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from workerkit import NotifySocket, Suite


@pytest.fixture
def suite(machina_root: Path, tmp_path: Path) -> Iterator[Suite]:
    """A root with the example data and machina-toolhost running on it; workers are started by the test."""
    kit = Suite(machina_root, tmp_path)
    kit.start_toolhost()
    try:
        yield kit
    finally:
        kit.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()

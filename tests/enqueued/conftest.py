"""Fixtures for the machina-enqueued tests: real daemons on loopback (see enqueued_kit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enqueued_kit import TOKEN, Daemon


@pytest.fixture
def start_daemon(machina_root: Path, tmp_path: Path) -> Iterator[Any]:
    """``start_daemon(MACHINA_X="1", args=(...))`` starts a daemon on a free port; all are killed afterwards."""
    daemons: list[Daemon] = []

    def start(
        args: tuple[str, ...] = (),
        root: Path | None = None,
        wrapper: tuple[str, ...] = (),
        popen: dict[str, Any] | None = None,
        **env: str,
    ) -> Daemon:
        daemon = Daemon(root or machina_root, tmp_path, env, args)
        daemons.append(daemon)
        return daemon.start(wrapper=wrapper, **(popen or {}))

    yield start
    for daemon in daemons:
        daemon.kill()


@pytest.fixture
def token_daemon(start_daemon: Any) -> Daemon:
    return start_daemon(MACHINA_API_TOKEN=TOKEN)

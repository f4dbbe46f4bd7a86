"""Fixtures of the machina-embed tests (helpers in embed_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embed_support import EmbedProcess


@pytest.fixture
def embed_process(machina_root: Path) -> Iterator[Any]:
    """A factory: ``embed_process(**env)`` starts a service on ``machina_root``; all are stopped at the end."""
    started: list[EmbedProcess] = []

    def start(argv: tuple[str, ...] = (), **env: str) -> EmbedProcess:
        service = EmbedProcess(machina_root, **env).start(argv)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(timeout=30)

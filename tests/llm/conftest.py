"""Fixtures of the LLM backend tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from machina.clock import FakeClock
from machina.testing.fake_llm import FakeLLM


@pytest.fixture
def fake_llm() -> Iterator[Callable[..., FakeLLM]]:
    """``fake_llm(turns, **options)``: a started fake server, closed after the test."""
    started: list[FakeLLM] = []

    def start(turns: list[dict[str, Any]] = (), **options: Any) -> FakeLLM:  # type: ignore[assignment]
        fake = FakeLLM(turns, **options).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

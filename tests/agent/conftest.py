"""Fixtures of the agent tests: a real toolhost on a fresh root, the loopback fake LLM server, sessions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.agent import Limits, Session
from machina.agent import events as ev
from machina.clock import FakeClock
from machina.config import load
from machina.llm import open_backend
from machina.testing.fake_llm import FakeLLM
from machina.testing.toolhost import RunningToolhost, running_toolhost

APP_LOG = "ok\nERROR disk full on /var\nINFO fine\nERROR cannot open socket\n"
BACKEND_URL_VARIABLE = {"oai_compat": "OAI_COMPAT_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL", "ollama": "OLLAMA_HOST"}
MODEL_VARIABLE = {"oai_compat": "OAI_COMPAT_MODEL", "anthropic": "ANTHROPIC_MODEL", "ollama": "OLLAMA_MODEL"}


def backend_settings(name: str, base_url: str, **extra: str) -> dict[str, str]:
    return {
        "MACHINA_ENV_FILE": "/dev/null",
        "MACHINA_CHAT_BACKEND": name,
        BACKEND_URL_VARIABLE[name]: base_url,
        MODEL_VARIABLE[name]: "test-model",
        **extra,
    }


@pytest.fixture
def agent_root(machina_root: Path) -> Path:
    (machina_root / "data").mkdir(exist_ok=True)
    (machina_root / "data" / "app.log").write_text(APP_LOG)
    return machina_root


@pytest.fixture
def toolhost(agent_root: Path) -> Iterator[Callable[..., RunningToolhost]]:
    """``toolhost(mode="standard", **env)``: a real machina-toolhost on ``agent_root``."""
    with contextlib.ExitStack() as stack:

        def start(mode: str = "standard", **env: str) -> RunningToolhost:
            return stack.enter_context(running_toolhost(str(agent_root), env={"MACHINA_PERMISSION_MODE": mode, **env}))

        yield start


@pytest.fixture
def fake_llm() -> Iterator[Callable[..., FakeLLM]]:
    with contextlib.ExitStack() as stack:

        def start(turns: list[dict[str, Any]] = (), **options: Any) -> FakeLLM:  # type: ignore[assignment]
            return stack.enter_context(FakeLLM(turns, **options))

        yield start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session_for(agent_root: Path, clock: FakeClock) -> Callable[..., Session]:
    """``session_for(host, fake=None, backend="oai_compat", limits=..., rules=(), **config)``."""

    def make(
        host: RunningToolhost,
        fake: FakeLLM | None = None,
        backend: str = "oai_compat",
        limits: Limits | None = None,
        rules: Any = (),
        stream: bool = True,
        **config: str,
    ) -> Session:
        model = None
        if fake is not None:
            model = open_backend(load(backend_settings(backend, fake.base_url, **config)), clock=clock)
        return Session(
            model,
            host.client,
            limits or Limits(max_cycles=10, budget_s=600, permission_timeout_s=180),
            memory_dir=str(agent_root / "memory"),
            clock=clock,
            rules=rules,
            stream=stream,
        )

    return make


def run_turn(session: Session, text: str, on_event: Callable[[Any], None] | None = None) -> list[Any]:
    """Every event of one turn; ``on_event`` sees each as it comes (to answer approvals, to cancel)."""
    seen = []
    for event in session.send(text):
        seen.append(event)
        if on_event is not None:
            on_event(event)
    assert isinstance(seen[-1], ev.Done) and sum(isinstance(e, ev.Done) for e in seen) == 1
    return seen


def of(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]

"""Helpers for the LLM backend tests: configurations pointing each backend at a fake server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import Config, load
from machina.llm import Backend, open_backend
from machina.testing.fake_llm import FakeLLM

KEY = "sk-test-9f8e7d6c5b4a39281706"


@dataclass(frozen=True)
class Wire:
    """One backend: its name, the variables that point it somewhere, and the path its chat calls use."""

    name: str
    url_var: str
    model_var: str
    key_var: str | None
    chat_path: str


OAI = Wire("oai_compat", "OAI_COMPAT_BASE_URL", "OAI_COMPAT_MODEL", "OAI_COMPAT_API_KEY", "/v1/chat/completions")
ANTHROPIC = Wire("anthropic", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", "ANTHROPIC_API_KEY", "/v1/messages")
OLLAMA = Wire("ollama", "OLLAMA_HOST", "OLLAMA_MODEL", None, "/api/chat")
WIRES = (OAI, ANTHROPIC, OLLAMA)
KEYED = (OAI, ANTHROPIC)


def config(wire: Wire, base_url: str, **extra: str) -> Config:
    env = {
        "MACHINA_ENV_FILE": "/dev/null",
        "MACHINA_CHAT_BACKEND": wire.name,
        wire.url_var: base_url,
        wire.model_var: "test-model",
    }
    if wire.key_var:
        env[wire.key_var] = KEY
    env.update(extra)
    return load(env)


def backend(wire: Wire, fake: FakeLLM | str, clock: Clock = SYSTEM_CLOCK, **extra: str) -> Backend:
    url = fake if isinstance(fake, str) else fake.base_url
    return open_backend(config(wire, url, **extra), clock=clock)


def scan_call(path: str = "data/app.log") -> dict[str, Any]:
    return {"tool_calls": [{"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": path, "pattern": "ERROR"}}]}

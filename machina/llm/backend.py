"""The one interface every LLM backend implements, and :func:`open_backend`, which builds the configured one.

Calls are synchronous (an ``httpx.Client`` underneath) and bounded: each call ends by its deadline, by the
caller's cancel event, or with an :mod:`machina.llm.errors` error, never by hanging or crashing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import VARIABLES, Config, ConfigError
from machina.llm.anthropic import API_VERSION as ANTHROPIC_VERSION
from machina.llm.anthropic import AnthropicCodec
from machina.llm.client import HttpBackend, Options
from machina.llm.codec import Codec
from machina.llm.http import Settings, Transport
from machina.llm.oai_compat import OpenAICodec, chat_base
from machina.llm.ollama import OllamaCodec
from machina.llm.types import Completion, Message, ToolSpec

BACKENDS = ("oai_compat", "anthropic", "ollama")


class Backend(Protocol):
    """A chat model behind one wire protocol.

    ``name`` is the backend (``oai_compat``, ``anthropic``, ``ollama``), ``model`` the model it asks, and
    ``base_url`` where it sends requests; ``base_url`` never contains a key, so it may be shown and logged.
    """

    name: str
    model: str
    base_url: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        json_schema: dict[str, Any] | None = None,
        deadline: float | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Ask the model once and return its whole answer.

        - ``tools``: offered natively (or, with ``MACHINA_CHAT_TOOL_MODE=json``, as a JSON action object the
          model must answer with); calls come back in :attr:`Completion.tool_calls` either way, naming AIDs.
        - ``json_schema``: ask for a JSON answer fitting this schema; ``Completion.text`` is then that JSON,
          validated (a non-conforming answer is :class:`~machina.llm.errors.LLMProtocolError`).
        - ``deadline``: a ``clock.monotonic()`` value (the clock given to :func:`open_backend`).  The call's
          timeout is ``min(MACHINA_CHAT_TIMEOUT_MS, deadline - now)``; retries of 429/5xx/529 happen only
          while time is left, honouring ``retry-after``.
        - ``on_text``: when given, the answer is streamed and ``on_text`` is called with each text delta as
          it arrives (from the calling thread).
        - ``cancel``: when set (from another thread), the call stops promptly with
          :class:`~machina.llm.errors.LLMCancelled`.
        """
        ...

    def list_models(self) -> list[str]:
        """Model names the server offers (Ollama ``/api/tags``, ``/v1/models`` for the others)."""
        ...

    def close(self) -> None:
        """Close the HTTP connections; the backend is unusable afterwards."""
        ...


def open_backend(
    cfg: Config,
    *,
    backend: str | None = None,
    model: str | None = None,
    temperature: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Backend:
    """Build the backend ``MACHINA_CHAT_BACKEND`` (or ``backend``) names, with its configured URL, key and model.

    ``backend``, ``model`` and ``temperature`` override the configuration (a front end's ``/use``).  A
    missing model or an unknown backend raises :class:`~machina.config.ConfigError` (exit 78).  Nothing
    is sent until the first call.  ``clock`` is used for deadlines and for waiting between retries.
    """
    name = backend or cfg["MACHINA_CHAT_BACKEND"]
    if name not in BACKENDS:
        raise ConfigError(f"LLM backend {name!r}: expected one of {', '.join(BACKENDS)}")
    max_tokens = cfg["MACHINA_CHAT_MAX_TOKENS"]
    timeout_s = cfg["MACHINA_CHAT_TIMEOUT_MS"] / 1000.0
    headers = {"content-type": "application/json", "user-agent": "machina"}
    key: str | None
    codec: Codec
    if name == "oai_compat":
        base, key, codec = chat_base(cfg["OAI_COMPAT_BASE_URL"]), cfg["OAI_COMPAT_API_KEY"], OpenAICodec()
        model_var, key_var = "OAI_COMPAT_MODEL", "OAI_COMPAT_API_KEY"
        if cfg["OAI_COMPAT_TIMEOUT_SEC"] is not None:
            timeout_s = float(cfg["OAI_COMPAT_TIMEOUT_SEC"])
        if key:
            headers["authorization"] = f"Bearer {key}"
    elif name == "anthropic":
        base, key, codec = cfg["ANTHROPIC_BASE_URL"].rstrip("/"), cfg["ANTHROPIC_API_KEY"], AnthropicCodec()
        model_var, key_var = "ANTHROPIC_MODEL", "ANTHROPIC_API_KEY"
        max_tokens = cfg["ANTHROPIC_MAX_TOKENS"] or max_tokens
        if not key and base == VARIABLES["ANTHROPIC_BASE_URL"].default:
            raise ConfigError("ANTHROPIC_API_KEY is not set: the anthropic backend needs it for api.anthropic.com")
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    else:
        base, key, codec = cfg["OLLAMA_HOST"].rstrip("/"), None, OllamaCodec()
        model_var, key_var = "OLLAMA_MODEL", None
    chosen_model = model or cfg[model_var]
    if not chosen_model:
        raise ConfigError(f"{model_var} is not set: the {name} backend needs a model name")
    secrets = tuple(s for s in (key,) if s)
    settings = Settings(name, base, timeout_s, key_variable=key_var, model_variable=model_var)
    transport = Transport(settings, headers, clock, secrets)
    temp = cfg["MACHINA_CHAT_TEMPERATURE"] if temperature is None else temperature
    options = Options(chosen_model, float(temp), int(max_tokens), cfg["MACHINA_CHAT_TOOL_MODE"])
    return HttpBackend(codec, transport, options, secrets)

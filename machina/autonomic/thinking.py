"""The engine's questions to the model: one JSON answer fitting a schema, or a clear reason there is none.

The answer is untrusted text (AGENT.md): it is validated against the schema by the backend, and whatever
it names (a tool, inputs, a query) still goes through the toolhost's checks like any other call.  It can
never approve or change settings: the engine has no operation that would let it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from machina.llm.errors import LLMError
from machina.llm.types import Completion, Message

log = logging.getLogger(__name__)
MODEL_DEADLINE_S = 120.0


class Model(Protocol):
    def complete(
        self, messages: Any, *, json_schema: dict[str, Any] | None = None, deadline: float | None = None
    ) -> Completion: ...


class NoAnswer(Exception):
    """The model gave no usable answer (down, garbage, truncated, off-schema); the level records why."""


def ask_json(model: Model, system: str, user: str, schema: dict[str, Any]) -> dict[str, Any]:
    messages = [Message("system", system), Message("user", user)]
    try:
        completion = model.complete(messages, json_schema=schema)
    except LLMError as exc:
        raise NoAnswer(f"model: {exc}") from exc
    try:
        answer = json.loads(completion.text)
    except ValueError as exc:
        raise NoAnswer(f"model answer is not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise NoAnswer("model answer is not a JSON object")
    return answer

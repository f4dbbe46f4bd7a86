"""LLM backends: one synchronous interface over the OpenAI-compatible, Anthropic and Ollama wire protocols.

    from machina.llm import open_backend, Message, ToolSpec

    backend = open_backend(cfg)                      # MACHINA_CHAT_BACKEND picks the protocol
    answer = backend.complete([Message("user", "hello")], tools=[ToolSpec(aid, doc, schema)], deadline=t)
    answer.text, answer.tool_calls                   # tool calls name AIDs, never function names

See docs/LLM_BACKENDS.md for each backend, its variables, the tool-name mapping, json mode and error handling.
"""

from __future__ import annotations

from machina.llm.backend import Backend, open_backend
from machina.llm.errors import (
    LLMAuthError,
    LLMCancelled,
    LLMError,
    LLMNotFound,
    LLMProtocolError,
    LLMTimeout,
    LLMUnavailable,
)
from machina.llm.toolnames import aid_to_function, function_to_aid
from machina.llm.types import Completion, Message, ToolCall, ToolSpec

__all__ = [
    "Backend",
    "Completion",
    "LLMAuthError",
    "LLMCancelled",
    "LLMError",
    "LLMNotFound",
    "LLMProtocolError",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
    "ToolCall",
    "ToolSpec",
    "aid_to_function",
    "function_to_aid",
    "open_backend",
]

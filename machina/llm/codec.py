"""What each wire protocol module provides, and the draft an answer is assembled in (streamed or not)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.llm.errors import LLMProtocolError
from machina.llm.toolnames import function_to_aid
from machina.llm.types import Completion, Message, ToolCall, ToolSpec


@dataclass(frozen=True)
class ChatRequest:
    """A chat call, protocol-neutral; ``tools`` are offered natively (json mode has already folded them in)."""

    model: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec]
    temperature: float
    max_tokens: int
    json_schema: dict[str, Any] | None = None


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> list[str]:
        """Bytes of the stream in, the text deltas they complete out."""

    def finish(self) -> Completion:
        """The stream ended: the whole answer, or LLMProtocolError when it was cut off."""


class Codec(Protocol):
    name: str
    chat_path: str
    models_path: str

    def chat_body(self, req: ChatRequest, stream: bool) -> dict[str, Any]: ...

    def parse(self, doc: Any) -> Completion: ...

    def decoder(self) -> StreamDecoder: ...

    def models(self, doc: Any) -> list[str]: ...


@dataclass
class CallDraft:
    id: str = ""
    name: str = ""
    arguments_text: str = ""
    arguments: Any = None  # set when the protocol sent an object rather than JSON text


@dataclass
class Draft:
    """An answer being assembled: text pieces, tool calls by index, finish reason, token counts."""

    what: str
    text: list[str] = field(default_factory=list)
    calls: dict[int, CallDraft] = field(default_factory=dict)
    finish_reason: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    def call(self, index: int) -> CallDraft:
        return self.calls.setdefault(index, CallDraft())

    def count(self, key: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            self.usage[key] = value

    def completion(self) -> Completion:
        calls = tuple(self._tool_call(i, self.calls[i]) for i in sorted(self.calls))
        reason = self.finish_reason or ("tool_calls" if calls else "stop")
        return Completion("".join(self.text), calls, reason, dict(self.usage))

    def _tool_call(self, index: int, draft: CallDraft) -> ToolCall:
        if not draft.name:
            raise LLMProtocolError(f"{self.what}: a tool call without a function name")
        args = draft.arguments
        if args is None:
            args = decode_arguments(draft.arguments_text, self.what, draft.name)
        if not isinstance(args, dict):
            raise LLMProtocolError(f"{self.what}: the arguments of tool call {draft.name!r} are not a JSON object")
        return ToolCall(draft.id or f"call_{index}", aid_for(draft.name), args)


def decode_arguments(text: str, what: str, name: str) -> Any:
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        raise LLMProtocolError(f"{what}: the arguments of tool call {name!r} are not valid JSON") from None


def aid_for(function_name: str) -> str:
    """The AID a function name maps to; a name outside the mapping is kept (the caller finds it was not offered)."""
    try:
        return function_to_aid(function_name)
    except ValueError:
        return function_name


def expect_object(doc: Any, what: str, where: str = "answer") -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise LLMProtocolError(f"{what}: the {where} is not a JSON object")
    return doc


def expect_text(value: Any, what: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LLMProtocolError(f"{what}: {where} is not text")
    return value

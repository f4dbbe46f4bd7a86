"""The backend every protocol shares: a codec (the wire format) over a transport (HTTP, retries, deadlines)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from machina.llm.codec import ChatRequest, Codec, StreamDecoder
from machina.llm.errors import LLMError
from machina.llm.http import BodySink, Sink, Transport
from machina.llm.jsonmode import (
    fold_messages,
    parse_action,
    parse_json_answer,
    schema_instructions,
    tool_instructions,
)
from machina.llm.types import Completion, Message, ToolSpec
from machina.log import Redactor, fields

log = logging.getLogger("machina.llm")


@dataclass(frozen=True)
class Options:
    model: str
    temperature: float
    max_tokens: int
    tool_mode: str  # "native" | "json"


class StreamSink(Sink):
    """Feeds a streamed body to the protocol's decoder and each text delta to ``on_text``.

    A server that ignores ``"stream": true`` and answers one JSON document (``application/json``; some
    OpenAI-compatible servers do) is read whole and its text given to ``on_text`` at once.
    """

    def __init__(self, codec: Codec, on_text: Callable[[str], None] | None) -> None:
        self.codec = codec
        self.decoder: StreamDecoder = codec.decoder()
        self.whole: BodySink | None = None
        self.on_text = on_text
        self.completion: Completion | None = None

    def start(self, content_type: str) -> None:
        if content_type.split(";")[0].strip().lower() == "application/json":
            self.whole = BodySink(self.codec.name)

    def feed(self, data: bytes) -> None:
        if self.whole is not None:
            self.whole.feed(data)
            return
        for delta in self.decoder.feed(data):
            if self.on_text is not None:
                self.on_text(delta)

    def end(self) -> None:
        if self.whole is None:
            self.completion = self.decoder.finish()
            return
        self.completion = self.codec.parse(self.whole.json())
        if self.on_text is not None and self.completion.text:
            self.on_text(self.completion.text)


class HttpBackend:
    def __init__(self, codec: Codec, transport: Transport, options: Options, secrets: Sequence[str] = ()) -> None:
        self.codec = codec
        self.transport = transport
        self.options = options
        self.name = codec.name
        self.model = options.model
        self.base_url = transport.settings.base_url
        self._redact = Redactor(secrets)

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
        if tools and json_schema is not None:
            raise ValueError("complete(): offer tools or ask for a JSON schema, not both")
        json_tools = bool(tools) and self.options.tool_mode == "json"
        request = self._request(messages, tools, json_schema, json_tools)
        # An answer that must be parsed as JSON first is not streamed to the human piece by piece.
        relay = None if (json_tools or json_schema is not None) else on_text
        try:
            completion = self._send(request, deadline, cancel, stream=on_text is not None, on_text=relay)
            if json_tools:
                completion = parse_action(completion, tools, self.name)
            elif json_schema is not None:
                completion = parse_json_answer(completion, json_schema, self.name)
        except LLMError as exc:
            clean = _redacted(exc, self._redact)
            log.warning(
                "llm call failed",
                extra=fields(backend=self.name, model=self.model, error=type(exc).__name__, detail=str(clean)),
            )
            raise clean from None
        if on_text is not None and relay is None and completion.text:
            on_text(completion.text)
        log.info(
            "llm call done",
            extra=fields(
                backend=self.name,
                model=self.model,
                finish=completion.finish_reason,
                tool_calls=len(completion.tool_calls),
                **completion.usage,
            ),
        )
        return completion

    def list_models(self) -> list[str]:
        deadline = self.transport.effective_deadline(None)
        try:
            sink = self.transport.exchange(
                "GET", self.codec.models_path, None, lambda: BodySink(self.name), deadline=deadline
            )
            assert isinstance(sink, BodySink)
            return self.codec.models(sink.json())
        except LLMError as exc:
            raise _redacted(exc, self._redact) from None

    def close(self) -> None:
        self.transport.close()

    def _request(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        json_schema: dict[str, Any] | None,
        json_tools: bool,
    ) -> ChatRequest:
        o = self.options
        if json_tools:
            return ChatRequest(
                o.model, fold_messages(messages, tool_instructions(tools)), (), o.temperature, o.max_tokens
            )
        if json_schema is not None:
            folded = fold_messages(messages, schema_instructions(json_schema))
            return ChatRequest(o.model, folded, (), o.temperature, o.max_tokens, json_schema)
        return ChatRequest(o.model, list(messages), list(tools), o.temperature, o.max_tokens)

    def _send(
        self,
        request: ChatRequest,
        deadline: float | None,
        cancel: threading.Event | None,
        *,
        stream: bool,
        on_text: Callable[[str], None] | None,
    ) -> Completion:
        body = self.codec.chat_body(request, stream)
        until = self.transport.effective_deadline(deadline)
        path = self.codec.chat_path
        if not stream:
            sink = self.transport.exchange(
                "POST", path, body, lambda: BodySink(self.name), deadline=until, cancel=cancel
            )
            assert isinstance(sink, BodySink)
            return self.codec.parse(sink.json())
        streamed = self.transport.exchange(
            "POST", path, body, lambda: StreamSink(self.codec, on_text), deadline=until, cancel=cancel
        )
        assert isinstance(streamed, StreamSink) and streamed.completion is not None
        return streamed.completion


def _redacted(exc: LLMError, redact: Redactor) -> LLMError:
    """The same error with any key the server echoed replaced (its type and exit code kept)."""
    text = str(exc)
    clean = redact(text)
    if clean == text:
        return exc
    copy = type(exc).__new__(type(exc))
    copy.__dict__.update(exc.__dict__)
    copy.args = (clean,)
    return copy

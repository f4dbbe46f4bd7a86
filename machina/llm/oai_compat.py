"""The OpenAI-compatible chat-completions protocol (OpenAI, vLLM, llama.cpp, LM Studio, Ollama's /v1).

Requests: ``POST /v1/chat/completions`` with ``tools`` ``[{"type": "function", "function": {name, description,
parameters}}]``; tool calls come back in ``choices[0].message.tool_calls`` with ``arguments`` as a JSON
*string*.  Streams are server-sent events of ``chat.completion.chunk`` objects whose ``delta`` carries text
and tool-call fragments (by ``index``: the first fragment has ``id`` and name, later ones pieces of the
arguments), ended by ``data: [DONE]``.  Only keys the protocol defines are sent: strict servers reject others.
"""

from __future__ import annotations

import json
from typing import Any

from machina.llm.codec import ChatRequest, Draft, expect_object, expect_text
from machina.llm.errors import LLMProtocolError
from machina.llm.streams import SSE, json_object
from machina.llm.toolnames import aid_to_function
from machina.llm.types import Completion, Message

FINISH = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls", "length": "length"}


def chat_base(base_url: str) -> str:
    """The server root: a base already ending in ``/v1`` is accepted and the ``/v1`` taken off."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class OpenAICodec:
    name = "oai_compat"
    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def chat_body(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": req.model,
            "messages": [_message(m) for m in req.messages],
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "stream": stream,
        }
        if req.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": aid_to_function(t.aid),
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in req.tools
            ]
        if req.json_schema is not None:
            body["response_format"] = {"type": "json_object"}
        return body

    def parse(self, doc: Any) -> Completion:
        what = self.name
        if isinstance(doc, dict) and "error" in doc:
            raise LLMProtocolError(f"{what}: the server answered an error object: {_error_text(doc)}")
        choice = _first_choice(expect_object(doc, what), what)
        message = expect_object(choice.get("message"), what, "message of the first choice")
        draft = Draft(what)
        draft.text.append(expect_text(message.get("content"), what, "message.content"))
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            raise LLMProtocolError(f"{what}: message.tool_calls is not a list")
        for index, call in enumerate(calls):
            _fragment(draft, index, call, what)
        draft.finish_reason = _finish(choice.get("finish_reason"), bool(calls))
        _usage(draft, doc.get("usage"))
        return draft.completion()

    def decoder(self) -> OpenAIStream:
        return OpenAIStream(self.name)

    def models(self, doc: Any) -> list[str]:
        data = expect_object(doc, self.name).get("data")
        if not isinstance(data, list):
            raise LLMProtocolError(f"{self.name}: the model list has no data array")
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


class OpenAIStream:
    def __init__(self, what: str) -> None:
        self.what = what
        self.sse = SSE(what)
        self.draft = Draft(what)
        self.done = False
        self.finished = False

    def feed(self, data: bytes) -> list[str]:
        return self._events(self.sse.feed(data))

    def finish(self) -> Completion:
        self._events(self.sse.end())
        if not (self.done or self.finished):
            raise LLMProtocolError(f"{self.what}: the stream ended before [DONE] (truncated answer)")
        if not self.draft.finish_reason:
            self.draft.finish_reason = "tool_calls" if self.draft.calls else "stop"
        return self.draft.completion()

    def _events(self, events: list[tuple[str, str]]) -> list[str]:
        deltas: list[str] = []
        for _event, data in events:
            if data.strip() == "[DONE]":
                self.done = True
                continue
            chunk = json_object(data, self.what)
            if "error" in chunk:
                raise LLMProtocolError(f"{self.what}: the server reported an error mid-stream: {_error_text(chunk)}")
            _usage(self.draft, chunk.get("usage"))
            choices = chunk.get("choices") or []
            if not isinstance(choices, list) or not choices:
                continue  # a usage-only chunk
            choice = expect_object(choices[0], self.what, "streamed choice")
            delta = choice.get("delta") or {}
            text = expect_text(delta.get("content"), self.what, "delta.content")
            if text:
                self.draft.text.append(text)
                deltas.append(text)
            for position, call in enumerate(delta.get("tool_calls") or []):
                index = call.get("index", position) if isinstance(call, dict) else position
                _fragment(self.draft, index, call, self.what)
            if choice.get("finish_reason"):
                self.finished = True
                self.draft.finish_reason = _finish(choice["finish_reason"], bool(self.draft.calls))
        return deltas


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": aid_to_function(c.aid), "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}


def _first_choice(doc: dict[str, Any], what: str) -> dict[str, Any]:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        raise LLMProtocolError(f"{what}: the answer has no choices")
    return expect_object(choices[0], what, "first choice")


def _fragment(draft: Draft, index: Any, call: Any, what: str) -> None:
    if not isinstance(call, dict) or not isinstance(index, int):
        raise LLMProtocolError(f"{what}: a malformed tool call")
    target = draft.call(index)
    function = call.get("function") or {}
    if not isinstance(function, dict):
        raise LLMProtocolError(f"{what}: a malformed tool call function")
    if call.get("id"):
        target.id = str(call["id"])
    if function.get("name"):
        target.name = str(function["name"])
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # some compatible servers send an object, as Ollama does
        target.arguments = arguments
    elif arguments is not None:
        target.arguments_text += expect_text(arguments, what, "function.arguments")


def _finish(reason: Any, has_calls: bool) -> str:
    if not reason:
        return "tool_calls" if has_calls else "stop"
    return FINISH.get(str(reason), str(reason))


def _usage(draft: Draft, usage: Any) -> None:
    if isinstance(usage, dict):
        draft.count("input_tokens", usage.get("prompt_tokens"))
        draft.count("output_tokens", usage.get("completion_tokens"))


def _error_text(chunk: dict[str, Any]) -> str:
    err = chunk.get("error")
    if isinstance(err, dict):
        err = err.get("message", "")
    return " ".join(str(err).split())[:300]

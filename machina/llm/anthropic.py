"""The Anthropic Messages protocol (``POST /v1/messages``).

Differences from the OpenAI shape that matter here: system text is the top-level ``system`` field; roles
must alternate ``user``/``assistant`` starting with ``user`` (consecutive turns of one role are merged into
one turn of content blocks); the model's calls are ``tool_use`` blocks and their results ``tool_result``
blocks in the *next user* turn; ``max_tokens`` is required; temperature goes from 0 to 1.  Streams are
server-sent events: ``message_start``, ``content_block_start``/``_delta``/``_stop`` (``text_delta`` and
``input_json_delta`` fragments), ``message_delta`` (stop reason, usage), ``message_stop``; ``ping`` and
``error`` may come at any time.
"""

from __future__ import annotations

import json
from typing import Any

from machina.llm.codec import ChatRequest, Draft, expect_object, expect_text
from machina.llm.errors import LLMProtocolError, LLMUnavailable
from machina.llm.jsonmode import fold_messages
from machina.llm.streams import SSE, json_object
from machina.llm.toolnames import aid_to_function
from machina.llm.types import Completion, Message

API_VERSION = "2023-06-01"
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
# A conversation must start with a user turn; this stands in when the caller's history starts otherwise.
OPENING = "(continuing the conversation)"


class AnthropicCodec:
    name = "anthropic"
    chat_path = "/v1/messages"
    models_path = "/v1/models"

    def chat_body(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in req.messages if m.role == "system" and m.content)
        messages = req.messages
        if not req.tools and any(m.tool_calls or m.role == "tool" for m in messages):
            # The API refuses tool_use/tool_result blocks in a request that defines no tools (a summary
            # phase offers none): the earlier calls and results then go as text.
            messages = fold_messages(messages, "")[1:]
        body: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": turns(messages),
            "temperature": min(1.0, req.temperature),
            "stream": stream,
        }
        if system:
            body["system"] = system
        if req.tools:
            body["tools"] = [
                {"name": aid_to_function(t.aid), "description": t.description, "input_schema": t.parameters}
                for t in req.tools
            ]
        return body

    def parse(self, doc: Any) -> Completion:
        what = self.name
        doc = expect_object(doc, what)
        if doc.get("type") == "error":
            raise LLMProtocolError(f"{what}: the server answered an error object: {_error_text(doc)}")
        content = doc.get("content")
        if not isinstance(content, list):
            raise LLMProtocolError(f"{what}: the answer has no content list")
        draft = Draft(what)
        for index, block in enumerate(content):
            block = expect_object(block, what, "content block")
            if block.get("type") == "text":
                draft.text.append(expect_text(block.get("text"), what, "a text block"))
            elif block.get("type") == "tool_use":
                call = draft.call(index)
                call.id, call.name, call.arguments = (
                    str(block.get("id", "")),
                    str(block.get("name", "")),
                    block.get("input"),
                )
        draft.finish_reason = _finish(doc.get("stop_reason"), bool(draft.calls))
        _usage(draft, doc.get("usage"))
        return draft.completion()

    def decoder(self) -> AnthropicStream:
        return AnthropicStream(self.name)

    def models(self, doc: Any) -> list[str]:
        data = expect_object(doc, self.name).get("data")
        if not isinstance(data, list):
            raise LLMProtocolError(f"{self.name}: the model list has no data array")
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


class AnthropicStream:
    def __init__(self, what: str) -> None:
        self.what = what
        self.sse = SSE(what)
        self.draft = Draft(what)
        self.stopped = False

    def feed(self, data: bytes) -> list[str]:
        return self._events(self.sse.feed(data))

    def finish(self) -> Completion:
        self._events(self.sse.end())
        if not self.stopped:
            raise LLMProtocolError(f"{self.what}: the stream ended before message_stop (truncated answer)")
        return self.draft.completion()

    def _events(self, events: list[tuple[str, str]]) -> list[str]:
        deltas: list[str] = []
        for event, data in events:
            doc = json_object(data, self.what)
            kind = doc.get("type", event)
            if kind == "error":
                err = doc.get("error")
                message = f"{self.what}: the server reported an error mid-stream: {_error_text(doc)}"
                if isinstance(err, dict) and err.get("type") in ("overloaded_error", "rate_limit_error", "api_error"):
                    raise LLMUnavailable(message)
                raise LLMProtocolError(message)
            if kind == "message_start":
                _usage(self.draft, expect_object(doc.get("message", {}), self.what, "message").get("usage"))
            elif kind == "content_block_start":
                self._block_start(doc)
            elif kind == "content_block_delta":
                text = self._block_delta(doc)
                if text:
                    deltas.append(text)
            elif kind == "message_delta":
                delta = doc.get("delta") or {}
                if isinstance(delta, dict) and delta.get("stop_reason"):
                    self.draft.finish_reason = _finish(delta["stop_reason"], bool(self.draft.calls))
                _usage(self.draft, doc.get("usage"))
            elif kind == "message_stop":
                self.stopped = True
        return deltas

    def _block_start(self, doc: dict[str, Any]) -> None:
        block = expect_object(doc.get("content_block"), self.what, "content_block")
        index = doc.get("index")
        if not isinstance(index, int):
            raise LLMProtocolError(f"{self.what}: a content block without an index")
        if block.get("type") == "tool_use":
            call = self.draft.call(index)
            call.id, call.name = str(block.get("id", "")), str(block.get("name", ""))
        elif block.get("type") == "text" and block.get("text"):
            self.draft.text.append(expect_text(block["text"], self.what, "a text block"))

    def _block_delta(self, doc: dict[str, Any]) -> str:
        delta = expect_object(doc.get("delta"), self.what, "delta")
        if delta.get("type") == "text_delta":
            text = expect_text(delta.get("text"), self.what, "text_delta")
            self.draft.text.append(text)
            return text
        if delta.get("type") == "input_json_delta":
            index = doc.get("index")
            if not isinstance(index, int) or index not in self.draft.calls:
                raise LLMProtocolError(f"{self.what}: input_json_delta for a block that is not a tool_use")
            self.draft.calls[index].arguments_text += expect_text(delta.get("partial_json"), self.what, "partial_json")
        return ""


def turns(messages: list[Message] | Any) -> list[dict[str, Any]]:
    """The conversation as alternating user/assistant turns of content blocks, starting with a user turn."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": OPENING}]})
    return out


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}]
    blocks: list[dict[str, Any]] = []
    if m.content:  # the API refuses empty text blocks
        blocks.append({"type": "text", "text": m.content})
    for c in m.tool_calls:
        blocks.append({"type": "tool_use", "id": c.id, "name": aid_to_function(c.aid), "input": c.arguments})
    return blocks


def _finish(reason: Any, has_calls: bool) -> str:
    if not reason:
        return "tool_calls" if has_calls else "stop"
    return FINISH.get(str(reason), str(reason))


def _usage(draft: Draft, usage: Any) -> None:
    if isinstance(usage, dict):
        draft.count("input_tokens", usage.get("input_tokens"))
        draft.count("output_tokens", usage.get("output_tokens"))


def _error_text(doc: dict[str, Any]) -> str:
    err = doc.get("error")
    if isinstance(err, dict):
        err = err.get("message", "")
    return " ".join(str(err if err is not None else json.dumps(doc)).split())[:300]

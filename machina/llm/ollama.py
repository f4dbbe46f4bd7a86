"""Ollama's native chat protocol (``POST /api/chat``).

Tools are offered in the OpenAI shape, but calls come back with ``arguments`` as a JSON *object* and usually
without an id (one is made up, ``call_<n>``, to pair the result with).  A tool result is a ``tool`` message
with ``tool_name``.  Sampling options go in ``options`` (``temperature``, ``num_predict``); a JSON schema
may be given as ``format``.  Streams are newline-delimited JSON objects, the last with ``"done": true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from machina.llm.codec import ChatRequest, Draft, expect_object, expect_text
from machina.llm.errors import LLMProtocolError
from machina.llm.streams import NDJSON
from machina.llm.toolnames import aid_to_function
from machina.llm.types import Completion, Message

FINISH = {"stop": "stop", "length": "length"}


class OllamaCodec:
    name = "ollama"
    chat_path = "/api/chat"
    models_path = "/api/tags"

    def chat_body(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": req.model,
            "messages": _messages(req.messages),
            "stream": stream,
            "options": {"temperature": req.temperature, "num_predict": req.max_tokens},
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
            body["format"] = req.json_schema
        return body

    def parse(self, doc: Any) -> Completion:
        draft = Draft(self.name)
        _frame(draft, expect_object(doc, self.name), self.name)
        return draft.completion()

    def decoder(self) -> OllamaStream:
        return OllamaStream(self.name)

    def models(self, doc: Any) -> list[str]:
        models = expect_object(doc, self.name).get("models")
        if not isinstance(models, list):
            raise LLMProtocolError(f"{self.name}: the tag list has no models array")
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]


class OllamaStream:
    def __init__(self, what: str) -> None:
        self.what = what
        self.lines = NDJSON(what)
        self.draft = Draft(what)
        self.done = False

    def feed(self, data: bytes) -> list[str]:
        return self._frames(self.lines.feed(data))

    def finish(self) -> Completion:
        self._frames(self.lines.end())
        if not self.done:
            raise LLMProtocolError(f"{self.what}: the stream ended before done (truncated answer)")
        return self.draft.completion()

    def _frames(self, frames: list[dict[str, Any]]) -> list[str]:
        deltas: list[str] = []
        for frame in frames:
            text = _frame(self.draft, frame, self.what)
            if text:
                deltas.append(text)
            self.done = self.done or frame.get("done") is True
        return deltas


def _frame(draft: Draft, frame: dict[str, Any], what: str) -> str:
    """Add one answer object (a whole answer, or one line of a stream) to the draft; its text delta."""
    if "error" in frame:
        raise LLMProtocolError(f"{what}: the server reported an error: {' '.join(str(frame['error']).split())[:300]}")
    message = expect_object(frame.get("message", {}), what, "message")
    text = expect_text(message.get("content"), what, "message.content")
    draft.text.append(text)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise LLMProtocolError(f"{what}: message.tool_calls is not a list")
    for call in calls:
        function = expect_object(call, what, "tool call").get("function")
        function = expect_object(function, what, "tool call function")
        index = len(draft.calls)
        target = draft.call(index)
        target.id = str(call.get("id") or f"call_{index}")
        target.name = str(function.get("name") or "")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):  # tolerated: some builds send a JSON string
            target.arguments_text = arguments
        else:
            target.arguments = arguments
    if frame.get("done") is True:
        reason = frame.get("done_reason")
        draft.finish_reason = "tool_calls" if draft.calls else FINISH.get(str(reason), str(reason or "stop"))
        draft.count("input_tokens", frame.get("prompt_eval_count"))
        draft.count("output_tokens", frame.get("eval_count"))
    return text


def _messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool_name of results
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": aid_to_function(c.aid), "arguments": c.arguments}} for c in m.tool_calls
            ]
            names.update({c.id: aid_to_function(c.aid) for c in m.tool_calls})
        if m.role == "tool" and m.tool_call_id in names:
            item["tool_name"] = names[m.tool_call_id]
        out.append(item)
    return out

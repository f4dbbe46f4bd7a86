"""How the fake LLM server writes one scripted answer in each protocol: whole bodies, stream frames, errors.

The shapes follow the real services (OpenAI chat completions, Anthropic Messages, Ollama /api/chat), so the
production clients parse them exactly as they would parse the real thing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from machina.llm.toolnames import aid_to_function

OPENAI, ANTHROPIC, OLLAMA = "openai", "anthropic", "ollama"
# Where the first piece of text is in a stream of frames (role chunk; message_start, ping, block start).
FIRST_TEXT_FRAME = {OPENAI: 1, ANTHROPIC: 3, OLLAMA: 0}

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """A scripted answer, resolved: text, calls (function names already mapped), finish, token counts."""

    text: str = ""
    calls: tuple[Call, ...] = ()
    finish: str = ""  # "" = stop, or tool_calls when there are calls; "length" to say it was cut
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 11, "output_tokens": 7})


def answer_from_turn(turn: dict[str, Any], number: int) -> Answer:
    text = turn.get("text", "")
    if "json" in turn:
        text = json.dumps(turn["json"])
    calls = tuple(
        Call(
            str(c.get("id") or f"call_{number}_{i}"),
            str(c.get("name") or aid_to_function(c["aid"])),
            dict(c.get("arguments", {})),
        )
        for i, c in enumerate(turn.get("tool_calls", ()))
    )
    return Answer(text, calls, str(turn.get("finish", "")), dict(turn.get("usage", Answer().usage)))


def pieces(text: str, words_per_piece: int = 2) -> list[str]:
    """The text in small pieces, as a model streams it (joined, they give the text back exactly)."""
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)]


def halves(text: str) -> list[str]:
    middle = len(text) // 2
    return [part for part in (text[:middle], text[middle:]) if part]


# --- whole bodies ----------------------------------------------------------------------------------------


def body(protocol: str, answer: Answer, model: str, number: int) -> dict[str, Any]:
    if protocol == OPENAI:
        return _openai_body(answer, model, number)
    if protocol == ANTHROPIC:
        return _anthropic_body(answer, model, number)
    return _ollama_body(answer, model)


def _openai_finish(answer: Answer) -> str:
    return answer.finish or ("tool_calls" if answer.calls else "stop")


def _openai_body(answer: Answer, model: str, number: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in answer.calls
        ]
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _openai_finish(answer)}],
        "usage": {
            "prompt_tokens": answer.usage["input_tokens"],
            "completion_tokens": answer.usage["output_tokens"],
            "total_tokens": answer.usage["input_tokens"] + answer.usage["output_tokens"],
        },
    }


def _anthropic_stop(answer: Answer) -> str:
    if answer.finish == "length":
        return "max_tokens"
    return "tool_use" if answer.calls else "end_turn"


def _anthropic_body(answer: Answer, model: str, number: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.text:
        content.append({"type": "text", "text": answer.text})
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in answer.calls]
    return {
        "id": f"msg_fake_{number}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _anthropic_stop(answer),
        "stop_sequence": None,
        "usage": dict(answer.usage),
    }


def _ollama_message(text: str, calls: tuple[Call, ...] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]
    return message


def _ollama_final(answer: Answer, model: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": "length" if answer.finish == "length" else "stop",
        "prompt_eval_count": answer.usage["input_tokens"],
        "eval_count": answer.usage["output_tokens"],
    }


def _ollama_body(answer: Answer, model: str) -> dict[str, Any]:
    return _ollama_final(answer, model, _ollama_message(answer.text, answer.calls))


# --- streams ---------------------------------------------------------------------------------------------


def frames(protocol: str, answer: Answer, model: str, number: int) -> list[bytes]:
    """The answer as a list of stream frames, each written (and flushed) on its own."""
    if protocol == OPENAI:
        return [_sse(None, doc) for doc in _openai_chunks(answer, model, number)] + [b"data: [DONE]\n\n"]
    if protocol == ANTHROPIC:
        return [_sse(name, doc) for name, doc in _anthropic_events(answer, model, number)]
    return [json.dumps(doc).encode() + b"\n" for doc in _ollama_lines(answer, model)]


def garbage_frames(protocol: str) -> list[bytes]:
    if protocol == OPENAI:
        return [b"data: {this is not json\n\n", b"data: [DONE]\n\n"]
    if protocol == ANTHROPIC:
        return [b"event: content_block_delta\ndata: nonsense{\n\n"]
    return [b"not json at all\n"]


def _sse(event: str | None, doc: dict[str, Any]) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(doc) + "\n\n").encode()


def _openai_chunks(answer: Answer, model: str, number: int) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in pieces(answer.text)]
    for index, call in enumerate(answer.calls):
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        out.append(chunk({"tool_calls": [head]}))
        for part in halves(json.dumps(call.arguments)):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    out.append(chunk({}, _openai_finish(answer)))
    usage = _openai_body(answer, model, number)["usage"]
    out.append({"id": f"chatcmpl-fake-{number}", "object": "chat.completion.chunk", "choices": [], "usage": usage})
    return out


def _anthropic_events(answer: Answer, model: str, number: int) -> list[tuple[str, dict[str, Any]]]:
    start = _anthropic_body(Answer(usage=answer.usage), model, number)
    start.update(content=[], stop_reason=None, usage={"input_tokens": answer.usage["input_tokens"], "output_tokens": 1})
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    if answer.text:
        events.append(_block_start(index, {"type": "text", "text": ""}))
        events += [_block_delta(index, {"type": "text_delta", "text": p}) for p in pieces(answer.text)]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for call in answer.calls:
        events.append(_block_start(index, {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}))
        events += [
            _block_delta(index, {"type": "input_json_delta", "partial_json": p})
            for p in halves(json.dumps(call.arguments))
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    delta = {"stop_reason": _anthropic_stop(answer), "stop_sequence": None}
    usage = {"output_tokens": answer.usage["output_tokens"]}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def _block_delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def _ollama_lines(answer: Answer, model: str) -> list[dict[str, Any]]:
    def line(message: dict[str, Any]) -> dict[str, Any]:
        return {"model": model, "created_at": "2026-01-01T00:00:00Z", "message": message, "done": False}

    out = [line(_ollama_message(p)) for p in pieces(answer.text)]
    if answer.calls:
        out.append(line(_ollama_message("", answer.calls)))
    out.append(_ollama_final(answer, model, _ollama_message("")))
    return out


# --- errors ----------------------------------------------------------------------------------------------


def error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    if protocol == ANTHROPIC:
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if protocol == OLLAMA:
        return {"error": message}
    return {"error": {"message": message, "type": "fake_error", "code": status}}


def models_body(protocol: str, models: list[str]) -> dict[str, Any]:
    if protocol == OLLAMA:
        return {"models": [{"name": m, "model": m, "size": 0} for m in models]}
    return {"object": "list", "data": [{"id": m, "object": "model", "type": "model"} for m in models]}

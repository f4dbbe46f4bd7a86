"""Tool calling without native tool support (``MACHINA_CHAT_TOOL_MODE=json``), and JSON-schema answers.

In json mode the tools are described in a system message and the model must answer with exactly one JSON
action object::

    {"type": "final", "content": "the answer for the human"}
    {"type": "tool_calls", "calls": [{"tool": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "app.log"}}]}

The answer is validated with jsonschema (``tool`` must be one of the offered AIDs, ``arguments`` an object;
each tool's own input schema is the toolhost's to enforce) and turned into the same
:class:`~machina.llm.types.Completion` native calling gives.  Earlier turns are folded into plain text the
same way: an assistant's calls become its JSON action, a tool result a user message naming the call.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import jsonschema

from machina.llm.errors import LLMProtocolError
from machina.llm.types import Completion, Message, ToolCall, ToolSpec


class JSONAnswerError(LLMProtocolError):
    """The model's answer is not the JSON the call asked for; ``text`` holds what it said instead."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


def action_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    return {
        "type": "object",
        "oneOf": [
            {
                "properties": {"type": {"const": "final"}, "content": {"type": "string"}},
                "required": ["type", "content"],
            },
            {
                "properties": {
                    "type": {"const": "tool_calls"},
                    "calls": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {"tool": {"enum": [t.aid for t in tools]}, "arguments": {"type": "object"}},
                            "required": ["tool", "arguments"],
                        },
                    },
                },
                "required": ["type", "calls"],
            },
        ],
    }


def tool_instructions(tools: Sequence[ToolSpec]) -> str:
    listing = "\n".join(
        f"- {t.aid}: {t.description}\n  arguments schema: {json.dumps(t.parameters, sort_keys=True)}" for t in tools
    )
    return (
        "You can use these tools:\n"
        f"{listing}\n"
        "Answer with exactly one JSON object and nothing else. To use tools:\n"
        '{"type": "tool_calls", "calls": [{"tool": "<tool id from the list>", "arguments": {...}}]}\n'
        "To give your final answer:\n"
        '{"type": "final", "content": "<your answer>"}'
    )


def schema_instructions(schema: dict[str, Any]) -> str:
    return "Answer with exactly one JSON value that conforms to this JSON Schema, and nothing else:\n" + json.dumps(
        schema, sort_keys=True
    )


def fold_messages(messages: Sequence[Message], instructions: str) -> list[Message]:
    """The conversation for a server that knows no tools: instructions first, calls and results as text."""
    out = [Message("system", instructions)]
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            action = {"type": "tool_calls", "calls": [{"tool": c.aid, "arguments": c.arguments} for c in m.tool_calls]}
            out.append(Message("assistant", json.dumps(action)))
        elif m.role == "tool":
            out.append(Message("user", f"Result of tool call {m.tool_call_id}:\n{m.content}"))
        else:
            out.append(Message(m.role, m.content))
    return out


def parse_action(completion: Completion, tools: Sequence[ToolSpec], what: str) -> Completion:
    """The model's JSON action as a completion: a final text, or tool calls."""
    doc = _decode(completion.text, what)
    _validate(doc, action_schema(tools), completion.text, what, "the JSON action object")
    if doc["type"] == "final":
        return Completion(doc["content"], (), "stop", completion.usage)
    calls = tuple(ToolCall(f"call_{secrets.token_hex(6)}", c["tool"], c["arguments"]) for c in doc["calls"])
    return Completion("", calls, "tool_calls", completion.usage)


def parse_json_answer(completion: Completion, schema: dict[str, Any], what: str) -> Completion:
    """Check a json_schema answer; the completion's text becomes the bare JSON (fences and chatter removed)."""
    doc = _decode(completion.text, what)
    _validate(doc, schema, completion.text, what, "the requested JSON schema")
    return Completion(json.dumps(doc), (), completion.finish_reason, completion.usage)


def _decode(text: str, what: str) -> Any:
    """The JSON in an answer, tolerating a code fence or words around one object (models add them)."""
    candidates = [text.strip()]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise JSONAnswerError(f"{what}: the model did not answer with JSON: {_preview(text)}", text)


def _validate(doc: Any, schema: dict[str, Any], text: str, what: str, against: str) -> None:
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        raise JSONAnswerError(f"{what}: the model's JSON does not fit {against}: {exc.message[:200]}", text) from None


def _preview(text: str) -> str:
    one = " ".join(text.split())
    return repr(one[:120] + ("..." if len(one) > 120 else ""))

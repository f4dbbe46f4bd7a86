"""What the fake LLM server checks in a request, as strict real servers do, and how it reads the last message.

A check returns a one-line problem (answered as HTTP 400, like the real services) or None.  They catch the
mistakes the earlier system made: Anthropic turns that do not alternate or do not start with ``user``, no
``max_tokens``, unknown message keys, a tool result that answers no call.
"""

from __future__ import annotations

from typing import Any

from machina.testing.fake_llm_wire import ANTHROPIC, OPENAI

OPENAI_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls"},
    "tool": {"role", "content", "tool_call_id"},
}
OLLAMA_KEYS = {"role", "content", "images", "tool_calls", "tool_name", "thinking"}


def check_request(protocol: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the request body is not a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    if not all(isinstance(m, dict) for m in messages):
        return "each message must be an object"
    if protocol == ANTHROPIC:
        return _check_anthropic(body, messages)
    if protocol == OPENAI:
        return _check_openai(messages)
    return _check_ollama(messages)


def _check_openai(messages: list[dict[str, Any]]) -> str | None:
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        allowed = OPENAI_KEYS.get(m.get("role", ""))
        if allowed is None:
            return f"messages[{i}]: unknown role {m.get('role')!r}"
        extra = set(m) - allowed
        if extra:
            return f"messages[{i}]: unknown keys {sorted(extra)}"
        for call in m.get("tool_calls") or []:
            if not isinstance(call.get("function", {}).get("arguments"), str):
                return f"messages[{i}]: tool_calls[].function.arguments must be a JSON string"
            open_calls.add(call.get("id"))
        if m["role"] == "tool" and m.get("tool_call_id") not in open_calls:
            return f"messages[{i}]: tool_call_id {m.get('tool_call_id')!r} answers no earlier tool call"
    return None


def _check_anthropic(body: dict[str, Any], messages: list[dict[str, Any]]) -> str | None:
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: field required"
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0.0 <= temperature <= 1.0:
        return "temperature: must be between 0 and 1"
    if messages[0].get("role") != "user":
        return "messages: first message must use the user role"
    if not body.get("tools") and any(_has_tool_blocks(m) for m in messages):
        return "messages: tool_use and tool_result blocks need tools to be defined in the request"
    tool_ids: set[str] = set()
    for i, m in enumerate(messages):
        if set(m) - {"role", "content"}:
            return f"messages[{i}]: unknown keys {sorted(set(m) - {'role', 'content'})}"
        if i and m.get("role") == messages[i - 1].get("role"):
            return "messages: roles must alternate between user and assistant"
        if m.get("role") not in ("user", "assistant"):
            return f"messages[{i}]: unexpected role {m.get('role')!r}"
        problem = _check_blocks(i, m, tool_ids)
        if problem:
            return problem
    return None


def _has_tool_blocks(m: dict[str, Any]) -> bool:
    content = m.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content
    )


def _check_blocks(i: int, m: dict[str, Any], tool_ids: set[str]) -> str | None:
    content = m.get("content")
    if isinstance(content, str):
        return None if content else f"messages[{i}]: content must not be empty"
    if not isinstance(content, list) or not content:
        return f"messages[{i}]: content must be a string or a non-empty list of blocks"
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and not block.get("text"):
            return f"messages[{i}]: text content blocks must be non-empty"
        if kind == "tool_use":
            if m["role"] != "assistant" or not isinstance(block.get("input"), dict):
                return f"messages[{i}]: tool_use blocks belong to assistant turns and need an input object"
            tool_ids.add(block.get("id"))
        if kind == "tool_result" and (m["role"] != "user" or block.get("tool_use_id") not in tool_ids):
            return f"messages[{i}]: tool_result must be in a user turn and answer an earlier tool_use"
        if kind not in ("text", "tool_use", "tool_result", "image"):
            return f"messages[{i}]: unknown content block type {kind!r}"
    return None


def _check_ollama(messages: list[dict[str, Any]]) -> str | None:
    for i, m in enumerate(messages):
        extra = set(m) - OLLAMA_KEYS
        if extra:
            return f"messages[{i}]: unknown keys {sorted(extra)}"
        for call in m.get("tool_calls") or []:
            if not isinstance(call.get("function", {}).get("arguments"), dict):
                return f"messages[{i}]: tool_calls[].function.arguments must be an object"
    return None


def last_message(protocol: str, body: Any) -> tuple[str, str]:
    """("user" | "tool" | other role, text) of the conversation's last message."""
    m = body["messages"][-1] if isinstance(body, dict) and body.get("messages") else {}
    role, content = m.get("role", ""), m.get("content", "")
    if isinstance(content, str):
        return ("tool" if role == "tool" else role), content
    texts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_result":
            role = "tool"
            inner = block.get("content", "")
            texts.append(inner if isinstance(inner, str) else " ".join(b.get("text", "") for b in inner))
        elif block.get("type") == "text":
            texts.append(block.get("text", ""))
    return role, "\n".join(texts)

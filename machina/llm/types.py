"""The values that cross the backend interface: messages in, a completion out.

They are protocol-neutral: each backend translates them to its wire format (OpenAI ``tool_calls`` with
arguments as a JSON string, Anthropic ``tool_use``/``tool_result`` blocks, Ollama ``tool_calls`` with arguments
as an object) and back.  Tool calls always name AIDs; the function names models see are a backend detail
(:mod:`machina.llm.toolnames`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for.  ``id`` pairs it with the ``tool`` message that answers it.

    ``aid`` is mapped back from the function name the model used; a name that is not a mapped AID comes
    back unchanged, so the caller must check that ``aid`` is one of the tools it offered.  ``arguments`` is
    the decoded JSON object (untrusted: validate it against the tool's schema before use).
    """

    id: str
    aid: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One turn of the conversation.

    - ``system``: instructions (Anthropic receives them as its top-level ``system`` field);
    - ``user``: the human's words;
    - ``assistant``: the model's earlier answer: ``content`` and/or ``tool_calls``;
    - ``tool``: the result of one tool call: ``tool_call_id`` names the call, ``content`` is the result text.
    """

    role: str
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r}: expected one of {', '.join(ROLES)}")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its AID, what it does, and the JSON Schema of its inputs."""

    aid: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """The model's answer.

    ``text`` is the whole text (also when it was streamed); ``tool_calls`` the calls it asked for, in order.
    ``finish_reason`` is normalised to ``stop`` (a final answer), ``tool_calls``, ``length`` (cut at the
    token limit) or the backend's own word when it is none of those.  ``usage`` holds ``input_tokens`` and
    ``output_tokens`` when the server reported them.
    """

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: dict[str, int] = field(default_factory=dict)

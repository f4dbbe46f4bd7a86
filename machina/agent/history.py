"""A conversation's history, kept short: whole recent turns, older ones folded into a digest.

A turn starts at a user message and holds everything up to the next one (the model's calls, their results,
its answer).  Turns are kept or folded whole, so a tool call is never separated from its result (strict
servers reject that).  The digest is plain text built without the model (one line per folded turn: what
was asked, which tools ran, how it was answered) and goes into the system prompt; it keeps the newest
:data:`DIGEST_LINES` lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from machina.llm.types import Message

DIGEST_LINES = 40
LINE_PART_CHARS = 160


@dataclass
class History:
    keep_turns: int
    max_chars: int
    messages: list[Message] = field(default_factory=list)
    digest: list[str] = field(default_factory=list)

    def add_turn(self, turn: list[Message]) -> None:
        self.messages.extend(turn)
        self._compact()

    def clear(self) -> None:
        self.messages.clear()
        self.digest.clear()

    def turns(self) -> list[list[Message]]:
        turns: list[list[Message]] = []
        for message in self.messages:
            if message.role == "user" or not turns:
                turns.append([])
            turns[-1].append(message)
        return turns

    def _compact(self) -> None:
        turns = self.turns()
        while len(turns) > 1 and (len(turns) > self.keep_turns or _chars(turns) > self.max_chars):
            self.digest.append(_summary_line(turns.pop(0)))
        self.digest = self.digest[-DIGEST_LINES:]
        self.messages = [m for turn in turns for m in turn]

    def digest_text(self) -> str:
        if not self.digest:
            return ""
        return "Earlier in this conversation (oldest first):\n" + "\n".join(f"- {line}" for line in self.digest)


def _chars(turns: list[list[Message]]) -> int:
    return sum(len(m.content) for turn in turns for m in turn)


def _short(text: str) -> str:
    one = " ".join(text.split())
    return one[:LINE_PART_CHARS] + ("..." if len(one) > LINE_PART_CHARS else "")


def _summary_line(turn: list[Message]) -> str:
    asked = next((m.content for m in turn if m.role == "user"), "")
    tools = [c.aid for m in turn for c in m.tool_calls]
    answer = next((m.content for m in reversed(turn) if m.role == "assistant" and m.content), "")
    line = f"user asked: {_short(asked)!r}"
    if tools:
        line += f"; tools used: {', '.join(dict.fromkeys(tools))}"
    if answer:
        line += f"; answer: {_short(answer)!r}"
    return line

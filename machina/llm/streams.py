"""Framing of streamed answers: server-sent events (OpenAI, Anthropic) and newline-delimited JSON (Ollama).

A decoder is fed raw bytes as they arrive and returns the complete frames they finish; a partial frame waits
for the next bytes.  Frames whose payload is not JSON are protocol errors, never crashes.
"""

from __future__ import annotations

import json
from typing import Any

from machina.llm.errors import LLMProtocolError

MAX_LINE = 8 * 1024 * 1024


class Lines:
    """Splits bytes into text lines (``\\n`` or ``\\r\\n``), keeping an unfinished line for later."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        if len(self._pending) > MAX_LINE:
            raise LLMProtocolError(f"{self.what}: a streamed line longer than {MAX_LINE} bytes")
        return [_text(line.rstrip(b"\r"), self.what) for line in lines]

    def rest(self) -> str:
        """What came after the last newline (a final line without one)."""
        rest, self._pending = self._pending, b""
        return _text(rest.rstrip(b"\r"), self.what)


class SSE:
    """Server-sent events: yields ``(event, data)`` pairs, ``event`` being "" when the server named none."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lines = Lines(what)
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for line in self._lines.feed(data):
            self._line(line, out)
        return out

    def end(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        rest = self._lines.rest()
        if rest:
            self._line(rest, out)
        self._line("", out)
        return out

    def _line(self, line: str, out: list[tuple[str, str]]) -> None:
        if not line:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event, self._data = "", []
        elif line.startswith(":"):
            return  # a comment (keep-alive)
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)


class NDJSON:
    """Newline-delimited JSON objects."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lines = Lines(what)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return [json_object(line, self.what) for line in self._lines.feed(data) if line.strip()]

    def end(self) -> list[dict[str, Any]]:
        rest = self._lines.rest()
        return [json_object(rest, self.what)] if rest.strip() else []


def json_object(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise LLMProtocolError(f"{what}: a streamed frame is not JSON: {_preview(text)}") from None
    if not isinstance(doc, dict):
        raise LLMProtocolError(f"{what}: a streamed frame is not a JSON object: {_preview(text)}")
    return doc


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LLMProtocolError(f"{what}: the stream is not UTF-8") from None


def _preview(text: str) -> str:
    one = " ".join(text.split())
    return repr(one[:80] + ("..." if len(one) > 80 else ""))

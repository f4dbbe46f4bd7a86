"""How ``machina chat`` shows a turn's events: as text for a person, or as one JSON object per line.

Text mode writes the answers on standard output and everything else (tool calls, approvals, errors) on
standard error, so ``machina chat --once ... > answer.txt`` captures just the answer.  While a reply streams
its pieces are written as they come; the final reply is then not written again.
"""

from __future__ import annotations

import json
import sys
from typing import IO

from machina.agent import events as ev


class TextRenderer:
    def __init__(self, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
        self.out = out
        self.err = err
        self.streamed = ""

    def show(self, event: ev.Event) -> None:
        if isinstance(event, ev.TextDelta):
            self.streamed += event.text
            self.out.write(event.text)
            self.out.flush()
            return
        if self.streamed and not isinstance(event, ev.Reply):
            self._end_stream()  # text before a tool call ("let me look")
        if isinstance(event, ev.Reply):
            if self.streamed.strip() != event.text.strip():
                self._end_stream()
                self.out.write(event.text + "\n")
            else:
                self._end_stream()
            self.out.flush()
        elif isinstance(event, ev.ToolStarted):
            self._note(f"[tool] {event.aid} {json.dumps(event.inputs, ensure_ascii=False)[:200]}")
        elif isinstance(event, ev.ToolResult):
            outcome = "ok" if event.ok else f"{event.status}: {event.error[:200]}"
            self._note(f"[tool] {event.aid} -> {outcome}")
        elif isinstance(event, ev.ApprovalDecided):
            self._note(f"[approval] {event.aid}: {event.decision}{' (' + event.detail + ')' if event.detail else ''}")
        elif isinstance(event, ev.ConfigDecided):
            self._note(f"[config] applied: {event.applied}" if event.applied else "[config] nothing changed")
        elif isinstance(event, ev.Error):
            self._note(f"[error] {event.message}")
        elif isinstance(event, ev.Done) and not event.answered:
            self._note(f"[stopped] {event.reason}{': ' + event.detail if event.detail else ''}")

    def _end_stream(self) -> None:
        if self.streamed:
            if not self.streamed.endswith("\n"):
                self.out.write("\n")
            self.out.flush()
            self.streamed = ""

    def _note(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()


class JsonRenderer:
    """``--json``: each event but the streamed pieces, one compact JSON object a line on standard output."""

    def __init__(self, out: IO[str] = sys.stdout) -> None:
        self.out = out

    def show(self, event: ev.Event) -> None:
        if isinstance(event, ev.TextDelta):
            return
        self.out.write(json.dumps(event.to_json(), sort_keys=True, ensure_ascii=False, default=str) + "\n")
        self.out.flush()


def approval_text(request: object) -> str:
    """What a person is shown before saying yes: the tool, its tier, why it asks, and the full inputs."""
    from machina.agent.approval import ApprovalRequest

    assert isinstance(request, ApprovalRequest)
    return (
        f"\n{request.aid} (tier {request.tier}) needs your approval: {request.reason}\n"
        f"inputs:\n{request.shown_inputs()}\n"
    )

"""LLM-free routing: the fast path (before the model) and the fallback rules (when no model answers).

Rules match the *whole* message, case-insensitively, with word boundaries, never a substring (AGENT.md
fault 16: "summarize this pdf" ran ``df -h``, "freedom of speech" ran ``free -h``).  The fast path routes only
read-only (tier 0) tools: status and memory figures, reading a named file, searching the notes in memory.
Nothing here writes, runs a shell command or skips a check: a route is a proposed call like the model's,
and the session sends it through the same checks and the toolhost.

The fallback rules apply only when no model answers: a greeting, scanning a named log file for a pattern
(``AID.ERROR_SCAN.v1``, the goal.ERROR_SCAN.v1 tool), remembering and recalling a note, status.  A note that
looks like a secret is not stored (fault 16: "remember my password is ..." was stored verbatim).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

METRICS = "AID.PROC.SELF_METRICS.v1"
FILE_READ = "AID.FILE.READ.v1"
MEMORY_QUERY = "AID.MEMORY.QUERY.v1"
MEMORY_APPEND = "AID.MEMORY.APPEND.v1"
ERROR_SCAN = "AID.ERROR_SCAN.v1"
NOTES_STREAM = "notes"
MAX_TEXT = 2000  # longer messages are never routed without the model

# A path names a file: it has a slash, or ends in an extension ("data/app.log", "notes.txt", "/etc/hosts").
PATH = r"(?P<path>(?:[\w.\-]*/)+[\w.\-]+|[\w\-][\w.\-]*\.[A-Za-z0-9]{1,8})"
SECRETISH = re.compile(
    r"\b(?:password|passwd|passphrase|secret|token|api[ _-]?key|private key|pin|credit card|ssn)s?\b", re.I
)


@dataclass(frozen=True)
class Route:
    """A call (or, with ``aid`` None, a plain reply) chosen without the model; ``rule`` names why."""

    rule: str
    aid: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    reply: str = ""


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(r"^\s*(?:please\s+)?" + pattern + r"\s*[.!?]*\s*$", re.IGNORECASE)


STATUS = _rx(r"(?:(?:show|get|check)\s+(?:me\s+)?)?(?:the\s+)?(?:system\s+|machine\s+)?(?:status|metrics|health)")
MEMORY_USAGE = _rx(r"(?:(?:show|get|check)\s+|what(?:'s|\s+is)\s+)?(?:the\s+)?memory\s+usage")
READ_FILE = _rx(r"(?:read|show|cat|print|display|open)\s+(?:me\s+)?(?:the\s+)?(?:file\s+)?" + PATH)
SEARCH_NOTES = _rx(
    r"(?:search|query|look\s+up)\s+(?:in\s+)?(?:my\s+|the\s+)?(?:memory|notes)\s+(?:for|about)\s+(?P<query>\S.{0,199}?)"
)
GREETING = _rx(r"(?:hi|hello|hey|good\s+(?:morning|afternoon|evening))(?:\s+there)?")
SCAN = _rx(r"scan\s+(?:the\s+)?(?:file\s+|log\s+)?" + PATH + r"\s+for\s+(?P<pattern>\S.{0,199}?)")
REMEMBER = _rx(r"remember(?:\s+that)?\s+(?P<note>\S.{0,1999}?)")
RECALL = _rx(
    r"(?:recall|what\s+do\s+you\s+remember\s+about|what\s+did\s+i\s+tell\s+you\s+about)\s+(?P<query>\S.{0,199}?)"
)


def fast_path(text: str) -> Route | None:
    """The read-only call this message plainly asks for, or None (then the model decides)."""
    if len(text) > MAX_TEXT:
        return None
    if STATUS.match(text) or MEMORY_USAGE.match(text):
        return Route("status", METRICS, {})
    if found := READ_FILE.match(text):
        return Route("read_file", FILE_READ, {"path": found["path"]})
    if found := SEARCH_NOTES.match(text):
        return Route("search_notes", MEMORY_QUERY, {"stream": NOTES_STREAM, "query": found["query"]})
    return None


def fallback(text: str, why: str) -> Route | None:
    """What can still be done for this message with no model (``why`` says what happened to it), or None."""
    if len(text) > MAX_TEXT:
        return None
    if GREETING.match(text):
        return Route(
            "greeting",
            reply=f"Hello. The model is not answering ({why}), so I can only do simple things: "
            "status, scan FILE for PATTERN, remember NOTE, recall TOPIC, read FILE.",
        )
    if found := SCAN.match(text):
        return Route("scan", ERROR_SCAN, {"input_path": found["path"], "pattern": found["pattern"]})
    if found := REMEMBER.match(text):
        if SECRETISH.search(found["note"]):
            return Route("remember_refused", reply="That looks like a secret; I do not store secrets in memory.")
        return Route("remember", MEMORY_APPEND, {"stream": NOTES_STREAM, "text": found["note"]})
    if found := RECALL.match(text):
        return Route("recall", MEMORY_QUERY, {"stream": NOTES_STREAM, "query": found["query"]})
    return fast_path(text)

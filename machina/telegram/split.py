"""Cut a long answer into Telegram messages: at most 4096 UTF-16 code units each (Telegram's unit).

Cuts fall, by preference, before a code fence, at a paragraph break, at a line break, at a space, and only
then anywhere; never inside a surrogate pair (Python strings hold code points, so no cut can split one),
nor inside an emoji sequence (a ZWJ, a variation selector, a skin tone or a combining mark never starts a
chunk; a flag's two regional indicators stay together).  A code fence open at a cut is closed at the end of
its chunk and reopened, with its language, at the start of the next, so every chunk renders on its own.

:func:`split_parts` keeps what was added apart from the text: joining the ``body`` of every part gives back
the answer exactly (the property tests check that).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

LIMIT = 4096
FENCE = "```"
_FENCE_LINE = re.compile(r"^[ \t]*```([^\n`]*)$", re.MULTILINE)
#: The reopening fence line carries at most this many characters of the language tag.
_LANG_MAX = 32
#: A cut at a preferred boundary is taken only if it keeps at least this share of the room.
_MIN_SHARE = 0.5


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Part:
    reopen: str  # a fence line that reopens a code block cut by the previous chunk ("" if none)
    body: str  # a slice of the original text
    close: str  # the fence that closes a code block still open at the cut ("" if none)

    def render(self) -> str:
        return self.reopen + self.body + self.close


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """The chunks to send, each within ``limit`` UTF-16 units; chunks of only white space are left out."""
    return [part.render() for part in split_parts(text, limit) if part.render().strip()]


def split_parts(text: str, limit: int = LIMIT) -> list[Part]:
    if limit < 64:
        raise ValueError("limit must leave room for the fence markers (at least 64)")
    parts: list[Part] = []
    rest = text
    fence: str | None = None  # the opening fence line of a block open at the previous cut
    while rest:
        reopen = f"{fence}\n" if fence is not None else ""
        last = Part(reopen, rest, _closing(rest, _open_after(fence, rest)))
        if utf16_len(last.render()) <= limit:
            parts.append(last)
            break
        room = limit - utf16_len(reopen)
        cut = _best_cut(rest, room, fence)
        if _open_after(fence, rest[:cut]) is not None:  # a code block stays open: leave room to close it
            cut = _best_cut(rest, room - utf16_len("\n" + FENCE), fence)
        body, rest = rest[:cut], rest[cut:]
        fence = _open_after(fence, body)
        parts.append(Part(reopen, body, _closing(body, fence)))
    return parts


def _closing(body: str, fence: str | None) -> str:
    if fence is None:
        return ""
    return FENCE if body.endswith("\n") else "\n" + FENCE


def _open_after(fence: str | None, body: str) -> str | None:
    """The fence line still open after ``body``, given the one open before it."""
    for match in _FENCE_LINE.finditer(body):
        fence = FENCE + match.group(1).strip()[:_LANG_MAX] if fence is None else None
    return fence


def _best_cut(text: str, room: int, fence: str | None) -> int:
    """Where to cut ``text`` so that ``text[:cut]`` takes at most ``room`` UTF-16 units (cut > 0)."""
    hard = _fit(text, room)
    window = text[:hard]
    floor = max(1, int(hard * _MIN_SHARE))
    opening = _last_opening_fence(window, fence)
    if opening >= floor:
        return opening
    # after the separator: a paragraph's blank line, the line's newline, the word's space end the chunk
    for boundary, width in ((window.rfind("\n\n"), 2), (window.rfind("\n"), 1), (window.rfind(" "), 1)):
        if boundary >= floor:
            return boundary + width
    return _safe(text, hard)


def _last_opening_fence(window: str, fence: str | None) -> int:
    """Start of the last fence line in ``window`` that opens a code block (-1 when none)."""
    last = -1
    inside = fence is not None
    for match in _FENCE_LINE.finditer(window):
        if not inside:
            last = match.start()
        inside = not inside
    return last


def _fit(text: str, room: int) -> int:
    """The largest index i with utf16_len(text[:i]) <= room (at least 1: a single code point always fits)."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > room:
            return max(1, index)
    return len(text)


def _safe(text: str, cut: int) -> int:
    """Move ``cut`` back so it does not fall inside an emoji sequence or before a combining mark."""
    start = cut
    while cut > 1 and not _boundary_ok(text, cut):
        cut -= 1
    return cut if _boundary_ok(text, cut) else start


def _boundary_ok(text: str, cut: int) -> bool:
    if cut <= 0 or cut >= len(text):
        return True
    before, after = text[cut - 1], text[cut]
    if before == "\u200d" or _joins_previous(after):
        return False
    if _regional(before) and _regional(after):
        # Flags are pairs of regional indicators: cut only after an even run of them.
        run = 0
        index = cut - 1
        while index >= 0 and _regional(text[index]):
            run += 1
            index -= 1
        return run % 2 == 0
    return True


def _joins_previous(char: str) -> bool:
    code = ord(char)
    if char == "\u200d" or 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True
    return unicodedata.category(char).startswith("M")


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF

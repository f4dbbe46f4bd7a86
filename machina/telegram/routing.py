"""``/auto_route``: which requests count as complex enough for the second backend.

A plain, documented rule (no model call): a request is complex when it is long (more than
:data:`LONG_WORDS` words), asks for several steps (numbered or bulleted lines, or two or more of "then",
"after that", "and also", "step"), or carries code (a fence).  Everything else stays on the chat's backend.
"""

from __future__ import annotations

import re

LONG_WORDS = 60
_STEP_WORDS = re.compile(r"\b(then|after that|and also|afterwards|step \d+|finally)\b", re.IGNORECASE)
_LIST_LINE = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)


def is_complex(text: str) -> bool:
    if len(text.split()) > LONG_WORDS or "```" in text:
        return True
    if len(_LIST_LINE.findall(text)) >= 2:
        return True
    return len(_STEP_WORDS.findall(text)) >= 2

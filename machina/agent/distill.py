"""Policy distillation: recorded experiences become keyword -> tool rules the fast path can use.

:func:`distill_rules` counts, for each keyword of each recorded request (words, lower-cased, no stop words),
which tool handled it and whether it succeeded.  A rule's confidence is the share of *all* requests with
that keyword that the tool handled successfully, so a keyword shared by several tools, or a tool that often
fails, stays below the bar.  :func:`lookup_distilled` finds the best rule for a new message at
``MIN_CONFIDENCE`` (0.8) and at least ``MIN_SUPPORT`` requests, matching whole words only.

A rule names a tool, not its inputs.  So a distilled route is taken only for read-only tools whose inputs
follow from the message itself (:data:`EXTRACTORS`); anything else is left to the model.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from machina.agent import routes
from machina.memory.streams import read_lines, stream_path

MIN_SUPPORT = 3
MIN_CONFIDENCE = 0.8
TAIL_BYTES = 4 * 1024 * 1024  # distil from the newest experiences only
_WORD = re.compile(r"[a-z][a-z0-9_]{2,}")
_STOP_TEXT = """the and for you your are was were this that these those with from what when where which how why
who can could would should will please tell show give get me my our its about into than then them there here
have has had not but all any some just also very"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


@dataclass(frozen=True)
class Rule:
    keyword: str
    aid: str
    successes: int
    support: int  # requests containing the keyword, whatever handled them

    @property
    def confidence(self) -> float:
        return self.successes / self.support if self.support else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "keyword": self.keyword,
            "aid": self.aid,
            "successes": self.successes,
            "support": self.support,
            "confidence": round(self.confidence, 3),
        }


def keywords(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def distill_rules(experiences: Iterable[dict[str, Any]], min_support: int = MIN_SUPPORT) -> list[Rule]:
    """Rules from experience records (``user_request``, ``tool_used``, ``success``), best first."""
    support: Counter[str] = Counter()
    successes: Counter[tuple[str, str]] = Counter()
    for record in experiences:
        request, tool = record.get("user_request"), record.get("tool_used")
        if not isinstance(request, str):
            continue
        words = keywords(request)
        support.update(words)
        if isinstance(tool, str) and record.get("success") is True:
            successes.update((word, tool) for word in words)
    rules = [
        Rule(word, tool, count, support[word])
        for (word, tool), count in successes.items()
        if support[word] >= min_support
    ]
    return sorted(rules, key=lambda r: (-r.confidence, -r.support, r.keyword, r.aid))


def lookup_distilled(text: str, rules: Iterable[Rule], min_confidence: float = MIN_CONFIDENCE) -> Rule | None:
    """The most confident rule whose keyword is a word of ``text``, at ``min_confidence`` or more."""
    words = keywords(text)
    best = [r for r in rules if r.keyword in words and r.confidence >= min_confidence]
    return max(best, key=lambda r: (r.confidence, r.support), default=None)


def _path_inputs(text: str) -> dict[str, Any] | None:
    found = re.findall(routes.PATH, text)
    return {"path": found[0]} if len(found) == 1 else None


# Tools a distilled rule may route to, and how their inputs come out of the message (None: they do not).
EXTRACTORS: dict[str, Callable[[str], dict[str, Any] | None]] = {
    routes.METRICS: lambda text: {},
    routes.FILE_READ: _path_inputs,
}


def distilled_route(text: str, rules: Iterable[Rule]) -> routes.Route | None:
    if len(text) > routes.MAX_TEXT:
        return None
    usable = [r for r in rules if r.aid in EXTRACTORS]
    rule = lookup_distilled(text, usable)
    if rule is None:
        return None
    inputs = EXTRACTORS[rule.aid](text)
    if inputs is None:
        return None
    return routes.Route(f"distilled:{rule.keyword}", rule.aid, inputs)


def recent_experiences(memory_dir: str, tail_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The records of the newest ``tail_bytes`` of ``memory/experiences.jsonl`` (bad lines skipped)."""
    path = stream_path(memory_dir, "experiences")
    try:
        size = os.path.getsize(path)
    except OSError:
        return []
    records = []
    for line in read_lines(path, max(0, size - tail_bytes)):
        record = line.entry.get("record") if line.entry else None  # a cut first line is just a bad line
        if isinstance(record, dict):
            records.append(record)
    return records

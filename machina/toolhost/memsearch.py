"""The toolhost's side of AID.MEMORY.SEARCH.v1: the memory index (machina.memory.index) searched for a tool.

The index (``state/memory/index.sqlite3``) is the suite's and stays out of every sandbox: a tool with the
``memory_read`` grant asks, the toolhost brings the index in step with the streams and answers with the
hits as data.  A connection is opened per search (SQLite connections stay in their thread).
"""

from __future__ import annotations

import json
import os
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.memory.index import MemoryIndex
from machina.memory.streams import StreamError, check_name
from machina.tools.base import ToolFailure

MAX_TOP_K = 50


class MemorySearch:
    def __init__(self, root: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.memory_dir = os.path.join(root, "memory")
        self.state_dir = os.path.join(root, "state")
        self.clock = clock

    def __call__(self, query: str, streams: list[str], top_k: int, half_life_days: float) -> list[dict[str, Any]]:
        try:
            names = [check_name(s) for s in streams]
        except StreamError as exc:
            raise ToolFailure(str(exc)) from None
        with MemoryIndex(self.memory_dir, self.state_dir, clock=self.clock) as index:
            index.sync()
            hits = index.query(query, streams=names, top_k=max(1, min(top_k, MAX_TOP_K)), half_life_days=half_life_days)
        return [
            {"stream": h.stream, "ts": h.ts, "score": h.score, "text": h.text, "record": _record(h.line)} for h in hits
        ]


def _record(line: str) -> Any:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry.get("record") if isinstance(entry, dict) else None

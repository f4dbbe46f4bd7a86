"""The goal texts of each tool's successful runs, the learned part of its centroid, kept under ``state/``.

File ``state/embed_history.json``::

    {"format": 1, "tools": {"AID.FILE.READ.v1": {"successes": 12, "goals": ["read the config", ...]}}}

``successes`` counts every success ever recorded; ``goals`` keeps the latest ``keep`` goal texts (oldest
dropped first).  Texts, not vectors, are stored, so a change of provider or dimension rebuilds every
centroid from the same evidence.  Each change is written with :func:`machina.fsutil.write_atomic` before
it is acknowledged.  A file that cannot be read is moved aside (``.corrupt``) with an error logged, and the
service starts with an empty history rather than refusing to start.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from machina.fsutil import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "embed_history.json"
FORMAT = 1


class SuccessHistory:
    def __init__(self, state_dir: str, keep: int, fsync: bool) -> None:
        self.path = os.path.join(state_dir, FILE_NAME)
        self.keep = keep
        self.fsync = fsync
        self._lock = threading.Lock()
        self._tools: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                doc = json.load(handle)
            tools = doc["tools"]
            if doc.get("format") != FORMAT or not isinstance(tools, dict):
                raise ValueError(f"unknown format {doc.get('format')!r}")
            return {
                str(aid): {"successes": int(entry["successes"]), "goals": [str(g) for g in entry["goals"]]}
                for aid, entry in tools.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = f"{self.path}.corrupt.{int(time.time())}"
            os.replace(self.path, aside)
            log.error("cannot read %s (%s): moved it to %s and starting with no history", self.path, exc, aside)
            return {}

    def add(self, aid: str, goal: str) -> int:
        """Record one success of ``aid`` for ``goal``, durably; returns the tool's success count."""
        with self._lock:
            old = self._tools.get(aid, {"successes": 0, "goals": []})
            goals = [*old["goals"], goal][-self.keep :] if self.keep else []
            entry = {"successes": old["successes"] + 1, "goals": goals}
            tools = {**self._tools, aid: entry}
            data = json.dumps({"format": FORMAT, "tools": tools}, sort_keys=True, ensure_ascii=False)
            # Written first, remembered second: a failed write (disk full) leaves memory and file agreeing.
            write_atomic(self.path, data.encode(), fsync=self.fsync)
            self._tools = tools
            return int(entry["successes"])

    def goals(self, aid: str) -> tuple[str, ...]:
        with self._lock:
            entry = self._tools.get(aid)
            return tuple(entry["goals"]) if entry else ()

    def successes(self, aid: str) -> int:
        """Total successes recorded; also the version of the tool's centroid (it changes on every success)."""
        with self._lock:
            entry = self._tools.get(aid)
            return int(entry["successes"]) if entry else 0

    def tools(self) -> int:
        with self._lock:
            return len(self._tools)

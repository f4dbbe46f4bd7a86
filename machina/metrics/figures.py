"""Cumulative job and tool figures that several worker processes write and the enqueue daemon reads.

Each worker keeps its own counters in ``<root>/state/metrics/worker-<id>.json``, keyed by worker id (not
pid), so a restarted worker loads its file and keeps counting: the totals survive restarts and the number
of files stays bounded by the number of workers.  Files are replaced atomically (never torn); they are
flushed at most every ``flush_interval`` seconds and on close, so a ``kill -9`` loses at most that much
counting, never the jobs themselves (the queue is the record of those).

The reader sums every file at scrape time.  Durations are kept both as the manual's
``duration_ms_total`` and as a Prometheus histogram (cumulative bucket counts in seconds).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)

# Prometheus' default buckets, in seconds; +Inf is implied by the count.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ToolFigures:
    ok: int = 0
    fail: int = 0
    duration_ms_total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS_S))

    @property
    def count(self) -> int:
        return self.ok + self.fail

    def observe(self, ok: bool, duration_ms: float) -> None:
        if ok:
            self.ok += 1
        else:
            self.fail += 1
        self.duration_ms_total += duration_ms
        seconds = duration_ms / 1000
        for i, bound in enumerate(DURATION_BUCKETS_S):
            if seconds <= bound:
                self.buckets[i] += 1

    def add(self, other: ToolFigures) -> None:
        self.ok += other.ok
        self.fail += other.fail
        self.duration_ms_total += other.duration_ms_total
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


@dataclass
class Figures:
    jobs_processed: int = 0
    jobs_ok: int = 0
    jobs_fail: int = 0
    tools: dict[str, ToolFigures] = field(default_factory=dict)

    def record_job(self, ok: bool, tool_calls: Iterable[tuple[str, bool, float]] = ()) -> None:
        """One finished job attempt and its tool calls as (aid, ok, duration_ms)."""
        self.jobs_processed += 1
        if ok:
            self.jobs_ok += 1
        else:
            self.jobs_fail += 1
        for aid, tool_ok, duration_ms in tool_calls:
            self.tools.setdefault(aid, ToolFigures()).observe(tool_ok, duration_ms)

    def add(self, other: Figures) -> None:
        self.jobs_processed += other.jobs_processed
        self.jobs_ok += other.jobs_ok
        self.jobs_fail += other.jobs_fail
        for aid, figures in other.tools.items():
            self.tools.setdefault(aid, ToolFigures()).add(figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": {"processed": self.jobs_processed, "ok": self.jobs_ok, "fail": self.jobs_fail},
            "tools": {
                aid: {"ok": t.ok, "fail": t.fail, "duration_ms_total": t.duration_ms_total, "buckets": t.buckets}
                for aid, t in sorted(self.tools.items())
            },
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Figures:
        jobs = doc.get("jobs", {})
        figures = cls(int(jobs.get("processed", 0)), int(jobs.get("ok", 0)), int(jobs.get("fail", 0)))
        for aid, t in doc.get("tools", {}).items():
            buckets = [int(b) for b in t.get("buckets", [])]
            if len(buckets) != len(DURATION_BUCKETS_S):
                buckets = [0] * len(DURATION_BUCKETS_S)
            figures.tools[str(aid)] = ToolFigures(
                int(t.get("ok", 0)), int(t.get("fail", 0)), float(t.get("duration_ms_total", 0.0)), buckets
            )
        return figures


def metrics_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "metrics")


class FiguresWriter:
    """A worker's own figures: loaded at start, updated per job, flushed atomically and rate-limited."""

    def __init__(self, state_dir: str, worker_id: str, flush_interval: float = 0.25, clock: Clock = SYSTEM_CLOCK):
        directory = metrics_dir(state_dir)
        ensure_dir(directory)
        self.path = os.path.join(directory, f"worker-{worker_id}.json")
        self.flush_interval = flush_interval
        self.clock = clock
        self.figures = _load(self.path)
        self._last_flush = float("-inf")
        self._dirty = False
        self._lock = threading.Lock()

    def record_job(self, ok: bool, tool_calls: Iterable[tuple[str, bool, float]] = ()) -> None:
        with self._lock:
            self.figures.record_job(ok, tool_calls)
            self._dirty = True
        if self.clock.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps(self.figures.to_json(), sort_keys=True).encode()
            self._dirty = False
            self._last_flush = self.clock.monotonic()
        write_atomic(self.path, data, fsync=False)


def read_all(state_dir: str) -> Figures:
    """The sum of every worker's figures (the enqueue daemon calls this at scrape time)."""
    total = Figures()
    directory = metrics_dir(state_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return total
    for name in names:
        if name.startswith("worker-") and name.endswith(".json"):
            total.add(_load(os.path.join(directory, name)))
    return total


def _load(path: str) -> Figures:
    try:
        with open(path, encoding="utf-8") as handle:
            return Figures.from_json(json.load(handle))
    except FileNotFoundError:
        return Figures()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("unreadable figures file %s (%s): counting from zero", path, exc)
        return Figures()

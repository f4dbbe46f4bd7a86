"""L1 Reflect: success statistics per tool over the recent experiences, kept as a ``tool_stats`` insight.

Insight dedup (OPERATIONS.md v4.0): no new ``tool_stats`` insight within 300 s of the last one, and none
whose rule set equals one among the last 20 insights, so a quiet system does not fill its memory with
copies of the same lesson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machina.clock import Clock
from machina.memory.streams import append, stream_path
from machina.tools.memory import tail_entries

RECENT_EXPERIENCES = 500
INSIGHT_PROXIMITY_S = 300.0
INSIGHT_LOOKBACK = 20
MIN_RUNS_FOR_A_RULE = 5
RELIABLE = 0.9
UNRELIABLE = 0.5


@dataclass(frozen=True)
class Reflection:
    written: bool
    reason: str
    insight: dict[str, Any] | None = None


def recent(memory_dir: str, stream: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` entries of a stream, oldest first, read from its tail (not the whole file)."""
    path = stream_path(memory_dir, stream)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; tail_entries reads with pread
    except FileNotFoundError:
        return []
    with handle:
        return tail_entries(handle, limit)


def tool_stats(experiences: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = {}
    for entry in experiences:
        record = entry.get("record") or {}
        tool = record.get("tool_used")
        if not isinstance(tool, str) or not isinstance(record.get("success"), bool):
            continue
        row = stats.setdefault(tool, {"runs": 0, "ok": 0, "elapsed_sec": 0.0})
        row["runs"] += 1
        row["ok"] += int(record["success"])
        elapsed = record.get("elapsed_sec")
        row["elapsed_sec"] += float(elapsed) if isinstance(elapsed, int | float) else 0.0
    for row in stats.values():
        row["success_rate"] = round(row["ok"] / row["runs"], 4)
        row["avg_elapsed_sec"] = round(row.pop("elapsed_sec") / row["runs"], 4)
    return dict(sorted(stats.items()))


def rules_from(stats: dict[str, dict[str, Any]]) -> list[str]:
    rules = []
    for tool, row in stats.items():
        if row["runs"] < MIN_RUNS_FOR_A_RULE:
            continue
        if row["success_rate"] >= RELIABLE:
            rules.append(f"{tool} is reliable ({row['ok']}/{row['runs']} succeeded)")
        elif row["success_rate"] < UNRELIABLE:
            rules.append(f"{tool} often fails ({row['ok']}/{row['runs']} succeeded): check its inputs first")
    return rules


def duplicate_reason(insights: list[dict[str, Any]], rules: list[str], now: float) -> str | None:
    for entry in reversed(insights[-INSIGHT_LOOKBACK:]):
        record = entry.get("record") or {}
        if record.get("type") != "tool_stats":
            continue
        ts = entry.get("ts")
        if isinstance(ts, int | float) and now - ts < INSIGHT_PROXIMITY_S:
            return f"a tool_stats insight was written {now - ts:.0f} s ago (less than {INSIGHT_PROXIMITY_S:.0f} s)"
        if sorted(record.get("rules") or []) == sorted(rules):
            return "the same rules are already among the last insights"
    return None


def reflect(memory_dir: str, clock: Clock, *, fsync: bool = False) -> Reflection:
    experiences = recent(memory_dir, "experiences", RECENT_EXPERIENCES)
    stats = tool_stats(experiences)
    if not stats:
        return Reflection(False, "no experiences with a tool and an outcome yet")
    rules = rules_from(stats)
    why_not = duplicate_reason(recent(memory_dir, "insights", INSIGHT_LOOKBACK), rules, clock.time())
    if why_not:
        return Reflection(False, why_not)
    runs = sum(row["runs"] for row in stats.values())
    insight = {
        "type": "tool_stats",
        "tool_stats": stats,
        "rules": rules,
        "importance": round(min(1.0, runs / 100), 3),
        "quality_score": round(sum(row["ok"] for row in stats.values()) / runs, 4),
    }
    append(memory_dir, "insights", insight, fsync=fsync, clock=clock)
    return Reflection(True, f"tool_stats over {runs} experience(s) of {len(stats)} tool(s)", insight)

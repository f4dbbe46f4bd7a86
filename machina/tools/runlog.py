"""AID.RUN.LOG.SUMMARY.v1: what happened in one run, from its run log: event counts, the tools called (calls,
failures, time), how long it took, how it ended, and whether its hash chain holds.

The log is the calling run's own (``logs/run_<run_id>.jsonl``, which the toolhost opens for the run's tools
alone), or a file the caller may read (``path``, confined like AID.FILE.READ.v1: a copy kept under data/).
The chain is checked by the toolhost (machina.audit.verify, with MACHINA_AUDIT_KEY when
the log is keyed: the key never enters the sandbox); the counting happens here.  A run still going on is
summarised as far as it got.
"""

from __future__ import annotations

import json
from typing import Any

from machina.tools.base import ToolContext, ToolFailure, adopt

MAX_LOG_BYTES = 64 * 1024 * 1024


def run_log_summary(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    answer, fds = ctx.host("run_log", path=inputs.get("path"))
    with adopt(fds[0], "rb") as handle:
        data = handle.read(MAX_LOG_BYTES)
    events = parse_events(data)
    if not events:
        raise ToolFailure(f"{answer['path']} holds no run-log events")
    return {"path": answer["path"], **summarise(events), "chain": answer["chain"]}


def parse_events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for raw in data.split(b"\n"):
        try:
            event = json.loads(raw)
        except ValueError:
            continue  # a torn last line; the chain check reports it
        if isinstance(event, dict):
            events.append(event)
    return events


def summarise(events: list[dict[str, Any]]) -> dict[str, Any]:
    by_event: dict[str, int] = {}
    tools: dict[str, dict[str, Any]] = {}
    for event in events:
        kind = str(event.get("event"))
        by_event[kind] = by_event.get(kind, 0) + 1
        if kind == "tool":
            _count_tool(tools, event)
    start, last = events[0], events[-1]
    done = last if last.get("event") == "done" else {}
    started, ended = _number(start.get("ts")), _number(last.get("ts"))
    return {
        "run_id": start.get("run_id"),
        "request_id": start.get("request_id"),
        "goal_id": start.get("goal_id"),
        "events": len(events),
        "by_event": by_event,
        "tools": tools,
        "started_ts": started,
        "last_ts": ended,
        "duration_s": round(ended - started, 6) if started is not None and ended is not None else None,
        "complete": bool(done),
        "status": done.get("status"),
        "reason": done.get("reason"),
        "steps": done.get("steps"),
    }


def _count_tool(tools: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
    row = tools.setdefault(str(event.get("aid")), {"calls": 0, "ok": 0, "failed": 0, "duration_ms": 0.0})
    row["calls"] += 1
    row["ok" if event.get("ok") else "failed"] += 1
    row["duration_ms"] = round(row["duration_ms"] + (_number(event.get("duration_ms")) or 0.0), 3)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

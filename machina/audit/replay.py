"""Strict replay: run a request again with the decisions its run log recorded, and compare.

The log is verified first (chain, key, structure).  The request must be the one the log ran (same request
digest).  The re-run takes every step's decision from the log (:class:`ReplayChooser`: no selector, and
never a live policy), calls the tools again through the same ToolClient, and writes its own run log in a
private temporary directory.  It passes when the goal manifest and menu are the same, every tool call
reaches the same state digest, and the run ends with the same status and final state digest.

Tools run again: a tool with side effects repeats them, and a tool that is not deterministic can make a
faithful log fail to replay; the first difference is reported by step.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from machina.audit.canonical import digest
from machina.audit.verify import LogReport, verify_log
from machina.engine.loop import new_run_id
from machina.engine.selectors.replay import ReplayChooser

if TYPE_CHECKING:
    from machina.engine.loop import Engine
    from machina.engine.result import RunResult


@dataclass
class ReplayReport:
    log: LogReport
    problems: list[str] = field(default_factory=list)
    result: RunResult | None = None
    replayed: list[dict[str, Any]] = field(default_factory=list)  # the replay's own events (its log is gone)

    @property
    def ok(self) -> bool:
        return not self.problems


def strict_replay(
    request: Mapping[str, Any], path: str, engine: Engine, key: str | None, *, allow_unkeyed: bool = False
) -> ReplayReport:
    log = verify_log(path, key, allow_unkeyed=allow_unkeyed)
    report = ReplayReport(log, list(log.problems))
    if not log.ok:
        return report
    if digest(request) != log.start.get("request_digest"):
        report.problems.append("the request is not the one this log ran (request digests differ)")
        return report
    selections = [e for e in log.events if e["event"] == "selection"]
    with tempfile.TemporaryDirectory(prefix="machina-replay-") as private:
        report.result = engine.run(
            request, run_id="replay_" + new_run_id(engine.clock), chooser=ReplayChooser(selections), logs_dir=private
        )
        again = verify_log(report.result.log_path, key)
    report.replayed = again.events
    report.problems += again.problems or compare(log.events, again.events)
    return report


def _projection(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "goal": events[0].get("goal_digest"),
        "menu": next((e.get("menu_digest") for e in events if e["event"] == "menu"), None),
        "tools": [(e["step"], e["aid"], e["ok"], e["state_after"]) for e in events if e["event"] == "tool"],
        "done": (events[-1].get("status"), events[-1].get("state_digest")),
    }


def compare(original: list[dict[str, Any]], again: list[dict[str, Any]]) -> list[str]:
    """The first differences between a logged run and its replay."""
    was, now = _projection(original), _projection(again)
    if was["goal"] != now["goal"]:
        return ["the goal manifest changed since the run (goal digests differ)"]
    if was["menu"] != now["menu"]:
        return ["the menu differs (tools or capabilities changed since the run)"]
    for old, new in zip(was["tools"], now["tools"], strict=False):
        if old != new:
            return [
                f"step {old[0]}: {old[1]} ok={old[2]} led to state {old[3][:12]}, "
                f"the replay's step {new[0]}: {new[1]} ok={new[2]} to {new[3][:12]}"
            ]
    if len(was["tools"]) != len(now["tools"]):
        return [f"the log has {len(was['tools'])} tool calls, the replay made {len(now['tools'])}"]
    if was["done"] != now["done"]:
        (status, state), (status_now, state_now) = was["done"], now["done"]
        return [f"the run ended {status} at {str(state)[:12]}, the replay {status_now} at {str(state_now)[:12]}"]
    return []

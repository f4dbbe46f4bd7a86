"""Strict replay: run a request again with the decisions its run log recorded, and compare.

The log is verified first (chain, key, structure).  The request must be the one the log ran (same request
digest).  The re-run takes every step's decision from the log (:class:`ReplayChooser`: no selector, and
never a live policy) and goes through the engine again: menu, bindings, schema checks, loop guard,
transactions, completion.  Tool calls are where replay must choose:

- a tool that is deterministic and has no side effects (tier 0: reads only) is **run again** through the
  toolhost, so a changed input or a tool that lies shows up as a different state;
- any other tool (it writes, enqueues, runs commands, or is not deterministic) is **not run again**: its
  logged reply is used.  Re-running it would repeat its side effects (a second report, a second enqueued
  job) or give a different answer by nature, which is how the earlier system's replay failed its own
  example (DESIGN.md section 7).

Every call's inputs must have the digest the log recorded.  The replay passes when the goal manifest and the
menu are the same, every tool call reaches the state digest the log recorded, and the run ends with the same
status and final state.  It writes its own run log in a private temporary directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from machina.approvals import without_leases
from machina.audit.canonical import digest
from machina.audit.verify import LogReport, verify_log
from machina.engine.loop import new_run_id
from machina.engine.selectors.replay import ReplayChooser
from machina.manifests.goals import format_pointer
from machina.manifests.tools import ToolSpec
from machina.owned import scratch_dir
from machina.toolapi import UNKNOWN_TOOL, ToolReply

if TYPE_CHECKING:
    from machina.engine.loop import Engine
    from machina.engine.result import RunResult
    from machina.toolapi import ToolClient

DIVERGED = "replay_diverged"


def reexecuted(tool: ToolSpec | None) -> bool:
    """Whether strict replay runs this tool again (deterministic, reads only) rather than reusing its reply."""
    return tool is not None and tool.deterministic and tool.tier == 0


class ReplayTools:
    """A ToolClient for strict replay: re-runs read-only deterministic tools, answers the rest from the log."""

    def __init__(self, live: ToolClient, tools: Mapping[str, ToolSpec], logged: list[dict[str, Any]]) -> None:
        self.live = live
        self.tools = tools
        self.logged = logged
        self.problems: list[str] = []
        self.rerun = 0
        self.reused = 0
        self._next = 0

    def call(
        self,
        aid: str,
        inputs: dict[str, Any],
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> ToolReply:
        if self._next >= len(self.logged):
            return self._diverged(f"the replay calls {aid}, the log has no further tool call")
        event = self.logged[self._next]
        self._next += 1
        if event["aid"] != aid:
            return self._diverged(f"step {event['step']}: the replay calls {aid}, the log {event['aid']}")
        if digest(inputs) != event.get("inputs_digest"):
            self.problems.append(f"step {event['step']}: {aid} was called with other inputs than the log's")
        # A call the log saw answered "unknown tool" is not run again: whether a tool exists is the toolhost's
        # state at the time (a Genesis run may have implemented it since), not a property of the tool.
        if reexecuted(self.tools.get(aid)) and event.get("status") != UNKNOWN_TOOL:
            self.rerun += 1
            return self.live.call(
                aid,
                inputs,
                request_id=request_id,
                run_id=run_id,
                lease_token=lease_token,
                idempotency_key=idempotency_key,
            )
        self.reused += 1
        return _logged_reply(event)

    def _diverged(self, problem: str) -> ToolReply:
        self.problems.append(problem)
        return ToolReply(False, DIVERGED, error=problem)


def _logged_reply(event: dict[str, Any]) -> ToolReply:
    output: dict[str, Any] = {}
    if event["ok"]:
        path = format_pointer(("outputs", event["aid"]))
        output = next((op["value"] for op in event.get("diff", []) if op.get("path") == path), {})
    return ToolReply(event["ok"], event["status"], output, event.get("error", ""), event.get("duration_ms", 0.0))


@dataclass
class ReplayReport:
    log: LogReport
    problems: list[str] = field(default_factory=list)
    result: RunResult | None = None
    replayed: list[dict[str, Any]] = field(default_factory=list)  # the replay's own events (its log is gone)
    rerun: int = 0  # tool calls run again
    reused: int = 0  # tool calls answered from the log

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
    if digest(without_leases(request)) != log.start.get("request_digest"):
        report.problems.append("the request is not the one this log ran (request digests differ)")
        return report
    selections = [e for e in log.events if e["event"] == "selection"]
    tools = ReplayTools(engine.tools, engine.catalog.tools, [e for e in log.events if e["event"] == "tool"])
    with tempfile.TemporaryDirectory(dir=scratch_dir("machina-replay")) as private:
        report.result = engine.run(
            request,
            run_id="replay_" + new_run_id(engine.clock),
            chooser=ReplayChooser(selections),
            logs_dir=private,
            tools=tools,
        )
        again = verify_log(report.result.log_path, key)
    report.replayed, report.rerun, report.reused = again.events, tools.rerun, tools.reused
    report.problems += again.problems or compare(log.events, again.events, tools.problems)
    return report


def _projection(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "goal": events[0].get("goal_digest"),
        "menu": next((e.get("menu_digest") for e in events if e["event"] == "menu"), None),
        "extended": [(e.get("aid"), e.get("menu_digest")) for e in events if e["event"] == "menu_extended"],
        "tools": [(e["step"], e["aid"], e["ok"], e["state_after"]) for e in events if e["event"] == "tool"],
        "done": (events[-1].get("status"), events[-1].get("state_digest")),
    }


def compare(original: list[dict[str, Any]], again: list[dict[str, Any]], call_problems: list[str]) -> list[str]:
    """The differences between a logged run and its replay, the first one first."""
    was, now = _projection(original), _projection(again)
    if was["goal"] != now["goal"]:
        return ["the goal manifest changed since the run (goal digests differ)"]
    if was["menu"] != now["menu"]:
        return ["the menu differs (tools or capabilities changed since the run)"]
    if was["extended"] != now["extended"]:
        return ["the tools a Genesis stage added to the menu differ"]
    problems = []
    for old, new in zip(was["tools"], now["tools"], strict=False):
        if old != new:
            problems.append(
                f"step {old[0]}: {old[1]} ok={old[2]} led to state {old[3][:12]}, "
                f"the replay's step {new[0]}: {new[1]} ok={new[2]} to {new[3][:12]}"
            )
            break
    if len(was["tools"]) != len(now["tools"]):
        problems.append(f"the log has {len(was['tools'])} tool calls, the replay made {len(now['tools'])}")
    if was["done"] != now["done"]:
        (status, state), (status_now, state_now) = was["done"], now["done"]
        problems.append(
            f"the run ended {status} at {str(state)[:12]}, the replay {status_now} at {str(state_now)[:12]}"
        )
    return problems + call_problems

"""What one run gives back to its caller (``machina run``, the worker): status, digests, figures, log path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from machina.metrics.figures import ToolFigures

DONE = "done"  # the goal is complete
FAILED = "failed"  # the request cannot run (invalid, unknown goal), a tool was denied, or the toolhost is down
ASKED = "asked"  # the selector asked for a supervisor, or a tool needs an approval
NOOP = "noop"  # the selector found nothing to do (or the menu is empty) before the goal was complete
BREAKER = "breaker"  # a budget ran out (max steps, max invalid picks), the loop guard, or an open policy breaker
STATUSES = (DONE, FAILED, ASKED, NOOP, BREAKER)


@dataclass
class RunResult:
    run_id: str
    request_id: str
    goal_id: str | None
    status: str
    reason: str
    steps: int
    state_digest: str | None
    log_path: str
    tool_stats: dict[str, ToolFigures] = field(default_factory=dict)  # per tool: ok, fail, duration_ms_total
    #: Every tool call as (aid, ok, duration_ms), in order: what machina.metrics.figures.Figures.record_job takes.
    tool_calls: list[tuple[str, bool, float]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    #: True when the failure is the infrastructure's (toolhost unreachable): the same job may well succeed later.
    retryable: bool = False
    #: Calls that needed a lease (status "asked") or ran on one the job carried ("spent"): machina.approvals.
    approvals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["tool_stats"] = tool_totals(self.tool_stats)
        return result


def tool_totals(stats: dict[str, ToolFigures]) -> dict[str, dict[str, Any]]:
    """Per-tool totals as the done event and ``--json`` show them."""
    return {
        aid: {"ok": f.ok, "fail": f.fail, "duration_ms_total": round(f.duration_ms_total, 3)}
        for aid, f in sorted(stats.items())
    }

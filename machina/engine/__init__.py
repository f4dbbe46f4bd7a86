"""The goal engine: runs one goal of a request through its tools, leaving a hash-chained run log.

The API other parts use::

    engine = Engine.from_config(cfg, root, tools)   # once per worker process: catalog, selectors, breaker
    result = engine.run(request, run_id=...)          # per job -> RunResult

    result = run_goal(request, tools=..., cfg=cfg, root=root)   # the same, for a single run

``RunResult`` carries the run id, the status (done / failed / asked / noop / breaker) and its reason, the
final state digest, per-tool figures for metrics (``tool_stats``: machina.metrics ToolFigures by AID, and
``tool_calls``: every call as (aid, ok, duration_ms)), the outputs, a ``retryable`` hint
and the path of the run log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.engine.catalog import Catalog
from machina.engine.loop import Engine, SuccessHook, new_run_id
from machina.engine.result import ASKED, BREAKER, DONE, FAILED, NOOP, STATUSES, RunResult

if TYPE_CHECKING:
    from collections.abc import Mapping

    from machina.config import Config
    from machina.root import Root
    from machina.toolapi import ToolClient

__all__ = [
    "ASKED",
    "BREAKER",
    "DONE",
    "FAILED",
    "NOOP",
    "STATUSES",
    "Catalog",
    "Engine",
    "RunResult",
    "SuccessHook",
    "new_run_id",
    "run_goal",
]


def run_goal(
    request: Mapping[str, Any],
    *,
    tools: ToolClient,
    cfg: Config,
    root: Root,
    clock: Clock = SYSTEM_CLOCK,
    run_id: str | None = None,
    on_success: SuccessHook | None = None,
) -> RunResult:
    """Run one request with a fresh engine (a worker keeps one :class:`Engine` instead)."""
    engine = Engine.from_config(cfg, root, tools, clock=clock, on_success=on_success)
    return engine.run(request, run_id=run_id)

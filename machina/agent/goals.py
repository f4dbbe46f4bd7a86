"""Goals a chat turn starts run through the goal engine, exactly as ``machina run`` runs them.

The engine's run log, selectors, breakers and toolhost calls are all its own; this adapter only builds the
run request and reads the result.  A run that stops because calls needed approval (status ``asked``) is
put to the human call by call; if every one is allowed, the goal runs once more carrying leases bound to
exactly those calls (``_leases``, machina.approvals), as ``machina queue approve`` would give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.approvals import ASKED, LEASES_KEY


class EngineLike(Protocol):
    catalog: Any

    def run(self, request: Mapping[str, Any], *, run_id: str | None = ...) -> Any: ...


@dataclass(frozen=True)
class GoalOutcome:
    ok: bool
    status: str
    reason: str
    summary: dict[str, Any]
    asked: list[dict[str, Any]] = field(default_factory=list)  # calls that need a human's yes


class EngineGoals:
    def __init__(self, engine: EngineLike) -> None:
        self.engine = engine

    def goal_ids(self) -> list[str]:
        return sorted(self.engine.catalog.goals)

    def run(
        self,
        goal_id: str,
        inputs: dict[str, Any],
        candidate_tags: list[str],
        request_id: str,
        leases: list[dict[str, str]] | None = None,
    ) -> GoalOutcome:
        request: dict[str, Any] = {"goal_id": goal_id, "inputs": inputs, "request_id": request_id}
        if candidate_tags:
            request["candidate_tags"] = candidate_tags
        if leases:
            request[LEASES_KEY] = leases
        result = self.engine.run(request)
        summary = {
            "status": result.status,
            "reason": result.reason,
            "steps": result.steps,
            "error": result.error,
            "outputs": result.outputs,
            "run_id": result.run_id,
        }
        asked = [a for a in result.approvals if a.get("status") == ASKED]
        return GoalOutcome(result.ok, result.status, result.reason, summary, asked)

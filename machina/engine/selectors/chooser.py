"""One step's decision under the request's control mode.

==============  =========================================================================================
FALLBACK_ONLY   the fallback selector (HEURISTIC or GPU_CENTROID); the policy is never started
BLENDED         the policy; when it fails, is not configured or its breaker is open, the fallback
POLICY_ONLY     the policy; a failure makes the step an invalid pick, an open breaker (or no policy at
                all) ends the run
SHADOW_POLICY   both: the policy's answer is logged, the fallback's is acted on
==============  =========================================================================================

Every policy failure (timeout, garbage, unknown SID, oversized output, refused executable or script,
non-zero exit, a patch touching ``_`` keys) counts towards the circuit breaker, in every mode that asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.engine.request import ControlMode
from machina.engine.selectors import PICK, Selection, Selector, StepContext
from machina.engine.selectors.breaker import CircuitBreaker
from machina.engine.selectors.driver import (
    BREAKER_OPEN,
    GARBAGE,
    NOT_CONFIGURED,
    RESERVED_KEY,
    UNKNOWN_SID,
    PolicyDriver,
    PolicyFailure,
)
from machina.engine.selectors.grammar import ReplyError, ReservedKeyError, parse_reply

RAW_LOG_MAX = 4096  # how much of a raw reply the run log keeps


@dataclass
class Decision:
    """What a step acts on, and what the run log records about how it was reached."""

    selection: Selection | None  # None: nothing usable this step (an invalid pick, or the run ends)
    source: str  # the selector acted on: HEURISTIC, GPU_CENTROID, POLICY, REPLAY
    raw: str = ""
    fallback_reason: str | None = None
    policy: dict[str, Any] | None = None  # the policy's own answer or failure, when it was consulted
    ends: tuple[str, str] | None = None  # (run status, reason) when the decision ends the run
    breaker_events: list[dict[str, Any]] = field(default_factory=list)


class Chooser(Protocol):
    def decide(self, ctx: StepContext) -> Decision: ...


@dataclass
class PolicyAnswer:
    selection: Selection | None = None
    raw: str = ""
    failure: str | None = None
    detail: str = ""

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"raw": self.raw[:RAW_LOG_MAX]}
        if self.failure:
            fields.update(error=self.failure, detail=self.detail[:RAW_LOG_MAX])
        return fields


class ModeChooser:
    """The production chooser: a fallback selector, an optional policy driver and its breaker."""

    def __init__(self, fallback: Selector, driver: PolicyDriver | None, breaker: CircuitBreaker) -> None:
        self.fallback = fallback
        self.driver = driver
        self.breaker = breaker

    def decide(self, ctx: StepContext) -> Decision:
        mode = ctx.control_mode
        if mode is ControlMode.FALLBACK_ONLY:
            return self._fallback(ctx)
        events: list[dict[str, Any]] = []
        answer = self._ask(ctx, events)
        if mode is ControlMode.SHADOW_POLICY or (mode is ControlMode.BLENDED and answer.failure):
            decision = self._fallback(ctx)
            decision.fallback_reason = "shadow" if mode is ControlMode.SHADOW_POLICY else answer.failure
        elif answer.failure is None:
            decision = Decision(answer.selection, "POLICY", answer.raw[:RAW_LOG_MAX])
        elif answer.failure in (NOT_CONFIGURED, BREAKER_OPEN):
            status = "failed" if answer.failure == NOT_CONFIGURED else "breaker"
            decision = Decision(None, "POLICY", ends=(status, f"policy_{answer.failure}"))
        else:
            decision = Decision(None, "POLICY")
        decision.policy = answer.log_fields()
        decision.breaker_events = events
        return decision

    def _fallback(self, ctx: StepContext) -> Decision:
        selection = self.fallback.select(ctx)
        return Decision(selection, selection.by or self.fallback.name, selection.render())

    def _ask(self, ctx: StepContext, events: list[dict[str, Any]]) -> PolicyAnswer:
        if self.driver is None:
            return PolicyAnswer(failure=NOT_CONFIGURED, detail="MACHINA_POLICY_CMD is not set")
        if not self.breaker.allow():
            return PolicyAnswer(failure=BREAKER_OPEN, detail="the policy's circuit breaker is open")
        answer = self._run(ctx)
        change = self.breaker.record_failure() if answer.failure else self.breaker.record_success()
        if change is not None:
            events.append(
                {
                    "state": change,
                    "failures": self.breaker.failures,
                    "cooldown_ms": int(self.breaker.cooldown_s * 1000),
                    "cause": answer.failure,
                }
            )
        return answer

    def _run(self, ctx: StepContext) -> PolicyAnswer:
        assert self.driver is not None
        raw = ""
        try:
            raw = self.driver.run(policy_payload(ctx))
            selection = parse_reply(raw)
        except PolicyFailure as exc:
            return PolicyAnswer(raw=raw, failure=exc.code, detail=exc.detail)
        except ReservedKeyError as exc:
            return PolicyAnswer(raw=raw, failure=RESERVED_KEY, detail=str(exc))
        except ReplyError as exc:
            return PolicyAnswer(raw=raw, failure=GARBAGE, detail=str(exc))
        if selection.kind == PICK and (selection.sid is None or ctx.menu.by_sid(selection.sid) is None):
            return PolicyAnswer(raw=raw, failure=UNKNOWN_SID, detail=f"{selection.sid} is not on the menu")
        return PolicyAnswer(selection=selection, raw=raw)


def policy_payload(ctx: StepContext) -> dict[str, Any]:
    """The payload file's content: DESIGN.md section 5's keys, plus goal_id, step and completed AIDs."""
    return {
        "goal_digest": ctx.goal.digest,
        "state_digest": ctx.state.digest,
        "control_mode": ctx.control_mode.value,
        "inputs": dict(ctx.state.inputs),
        "menu": [entry.public() for entry in ctx.menu.entries],
        "goal_id": ctx.goal.goal_id,
        "step": ctx.step,
        "completed": ctx.completed(),
    }

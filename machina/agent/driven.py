"""The Pulse loop when an external chat driver (``MACHINA_CHAT_CMD``) does the intent and summary phases.

intent -> (reply | action | config); action -> execute each (the session's checks, approvals and toolhost)
-> summary (when the intent asked for one) or continue -> (done | action | continue) ...  The same limits
end it as the in-process loop: cycles (one per driver call), budget, cancel, repeated calls, errors.
Goal actions run through the goal engine (machina.agent.goals), approvals put to the human as for tools.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol

from machina.agent import events as ev
from machina.agent.approval import ALLOW_ONCE, DENY, ApprovalRequest
from machina.agent.config_change import proposal_from
from machina.agent.driver import DriverError
from machina.exitcodes import MachinaError
from machina.ipc.jsonlines import ServiceUnavailable
from machina.llm.types import Message, ToolCall

if TYPE_CHECKING:
    from machina.agent.session import Session, _Turn


class Driver(Protocol):
    def ask(
        self, mode: str, request: dict[str, Any], seconds_left: float, cancel: threading.Event | None = None
    ) -> dict[str, Any]: ...

    def apply(self, overrides: dict[str, Any]) -> None: ...


def driven_turn(session: Session, turn: _Turn, driver: Driver) -> Generator[ev.Event, None, None]:
    from machina.agent.session import _Stop

    calls_seen: dict[str, int] = {}
    try:
        answer = _ask(session, turn, driver, "intent", {})
        mode = "intent"
        while True:
            kind = answer.get("type")
            if mode == "summary" or kind in ("reply", "done"):
                yield from _finish(session, turn, str(answer.get("content", "")).strip())
                return
            if kind == "config":
                yield from _config(session, turn, answer["changes"])
                return
            if kind == "action":
                results = yield from _act(session, turn, answer["actions"], calls_seen)
                extra = {"action_results": results, "observation": _observation(results)}
                mode = "summary" if mode == "intent" and answer.get("needs_summary") else "continue"
                answer = _ask(session, turn, driver, mode, extra)
                continue
            answer = _ask(session, turn, driver, "continue", {})  # {"type": "continue"}
            mode = "continue"
    except _Stop as stop:
        if stop.detail:
            yield ev.Error(stop.detail)
        session.history.add_turn([Message("user", turn.text), Message("assistant", f"[turn stopped: {stop.reason}]")])
        yield session._done(turn, stop.reason, stop.detail)


def _ask(session: Session, turn: _Turn, driver: Driver, mode: str, extra: dict[str, Any]) -> dict[str, Any]:
    """One driver call (one cycle), within the turn's limits."""
    from machina.agent.session import _Stop

    session._check_limits(turn)
    turn.cycles += 1
    request = {**session.driver_request(turn.text), **extra}
    try:
        return driver.ask(mode, request, turn.end - session.clock.monotonic(), session._cancel)
    except DriverError as exc:
        if session._cancel.is_set():
            raise _Stop(ev.CANCELLED) from None
        if turn.cycles == 1:
            raise _NoDriver(str(exc)) from None
        raise _Stop(ev.MODEL_ERROR, str(exc)) from None


class _NoDriver(Exception):
    """The driver failed its first call: the fallback rules apply."""


def _finish(session: Session, turn: _Turn, text: str) -> Generator[ev.Event, None, None]:
    from machina.agent.session import _Stop

    if not text:
        raise _Stop(ev.MODEL_ERROR, "the chat driver gave an empty answer")
    yield ev.Reply(text, "model")
    session.history.add_turn([Message("user", turn.text), Message("assistant", text)])
    yield session._done(turn, ev.ANSWERED)


def _act(
    session: Session, turn: _Turn, actions: list[dict[str, Any]], calls_seen: dict[str, int]
) -> Generator[ev.Event, None, list[dict[str, Any]]]:
    from machina.agent.session import _call_key, _Stop

    results = []
    for action in actions:
        if session._cancel.is_set():
            raise _Stop(ev.CANCELLED)
        label = str(action.get("aid") or action.get("goal_id"))[:200]
        if action["kind"] == "goal":
            outcome = yield from _goal(session, turn, action)
            turn.errors_in_row = 0 if outcome["success"] else turn.errors_in_row + 1
            results.append({"label": label, **outcome})
            continue
        call = ToolCall(f"act_{secrets.token_hex(4)}", action["aid"], dict(action.get("inputs") or {}))
        key = _call_key(call)
        calls_seen[key] = calls_seen.get(key, 0) + 1
        if calls_seen[key] >= session.limits.repeat_limit:
            raise _Stop(ev.REPEATED_CALL, f"the driver asked for the same {call.aid} call {calls_seen[key]} times")
        reply = yield from session._execute(turn, call)
        turn.errors_in_row = 0 if reply.ok else turn.errors_in_row + 1
        results.append(
            {
                "label": label,
                "success": reply.ok,
                "duration_ms": reply.duration_ms,
                "artifacts": [],
                "status": reply.status,
                "error": reply.error,
                "output": reply.output,
            }
        )
        if turn.errors_in_row >= session.limits.error_limit:
            raise _Stop(ev.ERRORS, f"{turn.errors_in_row} failed tool calls in a row")
    return results


def _goal(session: Session, turn: _Turn, action: dict[str, Any]) -> Generator[ev.Event, None, dict[str, Any]]:
    """Run a goal through the engine; calls it needs approved are asked about, then it runs once more."""
    goal_id, inputs = action["goal_id"], dict(action.get("inputs") or {})
    call_id = f"goal_{secrets.token_hex(4)}"
    if session.goals is None or goal_id not in session.goals.goal_ids():
        why = "goals are not available in this session" if session.goals is None else f"there is no goal {goal_id!r}"
        yield ev.ToolResult(call_id, goal_id[:200], False, "refused", why)
        return {"success": False, "status": "refused", "error": why, "duration_ms": 0, "artifacts": []}
    tags = [str(t) for t in action.get("candidate_tags") or []]
    yield ev.ToolStarted(call_id, goal_id, inputs)
    outcome = session.goals.run(goal_id, inputs, tags, turn.request_id)
    if outcome.asked:
        leases = yield from _goal_leases(session, turn, call_id, goal_id, outcome.asked)
        if leases:
            outcome = session.goals.run(goal_id, inputs, tags, turn.request_id, leases=leases)
    error = "" if outcome.ok else f"{outcome.status} ({outcome.reason})"
    yield ev.ToolResult(call_id, goal_id, outcome.ok, outcome.status, error, json.dumps(outcome.summary)[:300])
    turn.used(goal_id, outcome.ok)
    return {
        "success": outcome.ok,
        "status": outcome.status,
        "error": error,
        "output": outcome.summary,
        "duration_ms": 0,
        "artifacts": [],
    }


def _goal_leases(
    session: Session, turn: _Turn, call_id: str, goal_id: str, asked: list[dict[str, Any]]
) -> Generator[ev.Event, None, list[dict[str, str]]]:
    """One lease per asked call, each only on a timely yes; any no (or inputs too long to show) is none at all."""
    leases = []
    for entry in asked:
        aid, tier = str(entry["aid"]), int(entry["tier"])
        if "inputs" not in entry:  # never ask a human to approve inputs they cannot see
            yield ev.ApprovalDecided(call_id, aid, DENY, "the call's inputs are too long to show for approval")
            return []
        request = ApprovalRequest(
            call_id,
            aid,
            tier,
            dict(entry["inputs"]),
            f"goal {goal_id} needs it approved",
            session.clock,
            session.limits.permission_timeout_s,
        )
        yield ev.ApprovalNeeded(request)
        decision = request.decision()
        if decision != ALLOW_ONCE:
            yield ev.ApprovalDecided(call_id, aid, decision)
            return []
        try:
            granted = session.toolbox.client.issue_lease(
                aid, tier, session.limits.lease_ttl_ms, inputs_digest=str(entry["inputs_digest"])
            )
        except (MachinaError, ServiceUnavailable, OSError) as exc:
            yield ev.ApprovalDecided(call_id, aid, decision, f"the approval could not be turned into a lease: {exc}")
            return []
        yield ev.ApprovalDecided(call_id, aid, decision, "a lease for this one call was issued")
        leases.append({"aid": aid, "inputs_digest": str(entry["inputs_digest"]), "token": str(granted["lease_token"])})
    return leases


def _observation(results: list[dict[str, Any]]) -> str:
    from machina.agent.toolbox import result_for_model
    from machina.toolapi import ToolReply

    parts = []
    for r in results:
        reply = ToolReply(r["success"], r.get("status", ""), r.get("output") or {}, r.get("error", ""))
        parts.append(f"{r['label']}: {result_for_model(reply, 4000)}")
    return "\n".join(parts)


def _config(session: Session, turn: _Turn, changes: list[dict[str, Any]]) -> Generator[ev.Event, None, None]:
    proposal = proposal_from(changes, session.clock, session.limits.permission_timeout_s)
    for refused in proposal.refused:
        yield ev.Error(f"configuration change refused: {refused}")
    applied: dict[str, Any] = {}
    if proposal.changes:
        yield ev.ConfigProposed(proposal)
        if proposal.confirmed():
            applied = dict(proposal.changes)
            session.apply_overrides(applied)
    yield ev.ConfigDecided(applied)
    text = f"Applied: {applied}." if applied else "No setting was changed."
    yield from _finish(session, turn, text)

"""Approvals: "ask" needs a human; only a timely yes runs the call, once, with exactly those inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machina.agent import Limits
from machina.agent import events as ev
from tests.agent.conftest import of, run_turn

WRITE = {"aid": "AID.FILE.WRITE.v1", "arguments": {"path": "notes/out.txt", "content": "hello", "mkdirs": True}}
SAY_RESULT = {"match": r'"status": "(\w+)"', "on": "tool", "reply": {"text": "The write ended with \\1."}}


def answer_with(decision: str | None, clock: Any = None, after_s: float = 0.0) -> Any:
    def on_event(event: Any) -> None:
        if isinstance(event, ev.ApprovalNeeded):
            if clock is not None:
                clock.advance(after_s)
            if decision == "allow":
                event.request.allow_once()
            elif decision == "deny":
                event.request.deny()

    return on_event


@pytest.mark.parametrize(
    ("decision", "late_s", "expected"),
    [("deny", 0, "deny"), (None, 0, "no_human"), ("allow", 181, "timeout")],
)
def test_an_ask_tool_does_not_run_without_a_timely_yes(
    decision: str | None,
    late_s: float,
    expected: str,
    toolhost: Any,
    fake_llm: Any,
    session_for: Any,
    agent_root: Path,
    clock: Any,
) -> None:
    host = toolhost("supervised")
    fake = fake_llm([{"tool_calls": [WRITE]}], rules=[SAY_RESULT])
    events = run_turn(session_for(host, fake), "write hello to notes/out.txt", answer_with(decision, clock, late_s))
    asked = of(events, ev.ApprovalNeeded)
    assert len(asked) == 1
    request = asked[0].request
    assert request.aid == "AID.FILE.WRITE.v1" and request.tier == 1
    assert request.inputs == WRITE["arguments"] and '"content": "hello"' in request.shown_inputs()
    assert [d.decision for d in of(events, ev.ApprovalDecided)] == [expected]
    assert of(events, ev.ToolResult)[0].status == "denied"
    assert not (agent_root / "notes" / "out.txt").exists()
    assert of(events, ev.Reply)[0].text == "The write ended with denied."


def test_allow_once_runs_exactly_that_call_and_the_same_call_later_asks_again(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost("supervised")
    fake = fake_llm([{"tool_calls": [WRITE]}, {"text": "written"}, {"tool_calls": [WRITE]}], rules=[SAY_RESULT])
    session = session_for(host, fake)
    events = run_turn(session, "write hello to notes/out.txt", answer_with("allow"))
    assert [d.decision for d in of(events, ev.ApprovalDecided)] == ["allow_once"]
    assert of(events, ev.ToolResult)[0].ok
    assert (agent_root / "notes" / "out.txt").read_text() == "hello"
    (agent_root / "notes" / "out.txt").unlink()
    # the same call in the next turn is asked about again: the first yes was spent
    again = run_turn(session, "do it again", answer_with(None))
    assert len(of(again, ev.ApprovalNeeded)) == 1
    assert not (agent_root / "notes" / "out.txt").exists()
    # no lease token ever appears in an event
    assert "mlease_" not in json.dumps([e.to_json() for e in events + again])


def test_a_human_may_edit_the_inputs_and_exactly_the_edited_call_runs(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost("supervised")
    fake = fake_llm([{"tool_calls": [WRITE]}, {"text": "written"}, {"tool_calls": [WRITE]}], rules=[SAY_RESULT])
    session = session_for(host, fake)
    edited = {"path": "notes/safer.txt", "content": "checked", "mkdirs": True}

    def edit(inputs: dict[str, Any]) -> Any:
        def on_event(event: Any) -> None:
            if isinstance(event, ev.ApprovalNeeded):
                event.request.allow_edited(inputs)

        return on_event

    events = run_turn(session, "write hello", edit(edited))
    assert "edited" in of(events, ev.ApprovalDecided)[0].detail
    assert (agent_root / "notes" / "safer.txt").read_text() == "checked"
    assert not (agent_root / "notes" / "out.txt").exists()
    assert "approved_inputs_edited_by_human" in json.dumps(fake.chat_requests[1].body)  # the model is told
    # an edit that breaks the tool's schema is a no
    refused = run_turn(session, "write hello", edit({"path": "x", "content": 1}))
    assert of(refused, ev.ApprovalDecided)[0].decision == "deny"
    assert of(refused, ev.ToolResult)[0].status == "denied" and not (agent_root / "x").exists()


def test_a_lease_for_one_call_is_refused_for_other_inputs(toolhost: Any, agent_root: Path) -> None:
    host = toolhost("supervised")
    granted = host.client.issue_lease("AID.FILE.WRITE.v1", 1, 60_000, inputs=WRITE["arguments"])
    other = {**WRITE["arguments"], "content": "something else"}
    reply = host.client.call("AID.FILE.WRITE.v1", other, lease_token=granted["lease_token"])
    assert not reply.ok and "other inputs" in reply.error
    assert not (agent_root / "notes" / "out.txt").exists()
    # the lease was kept for the call it was issued for
    assert host.client.call("AID.FILE.WRITE.v1", WRITE["arguments"], lease_token=granted["lease_token"]).ok


def test_a_yes_the_toolhost_will_not_lease_is_a_no(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    # the toolhost refuses the lease (longer than MACHINA_LEASE_MAX_TTL_MS): the call must not run anyway
    host = toolhost("supervised", MACHINA_LEASE_MAX_TTL_MS="1000")
    fake = fake_llm([{"tool_calls": [WRITE]}], rules=[SAY_RESULT])
    events = run_turn(session_for(host, fake), "write it", answer_with("allow"))
    decided = of(events, ev.ApprovalDecided)[0]
    assert decided.decision == "allow_once" and "could not be turned into a lease" in decided.detail
    assert "MACHINA_LEASE_MAX_TTL_MS" in decided.detail
    assert of(events, ev.ToolResult)[0].status == "denied"


def test_an_approval_answered_after_the_configured_timeout_is_refused(clock: Any) -> None:
    from machina.agent.approval import ApprovalRequest

    request = ApprovalRequest("c1", "AID.FILE.WRITE.v1", 1, {}, "ask", clock, timeout_s=5)
    clock.advance(4.9)
    assert request.decision() == "no_human"
    clock.advance(0.2)
    request.allow_once()
    assert request.decision() == "timeout"
    assert Limits(1, 1, 5).permission_timeout_s == 5


def test_always_writes_one_narrow_rule_that_answers_only_that_call_and_can_be_removed(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    from machina.agent.always import AlwaysRules

    host = toolhost("supervised")
    other = {"aid": "AID.FILE.WRITE.v1", "arguments": {**WRITE["arguments"], "content": "other"}}
    fake = fake_llm(
        [{"tool_calls": [WRITE]}, {"text": "1"}, {"tool_calls": [WRITE]}, {"text": "2"}, {"tool_calls": [other]}],
        rules=[SAY_RESULT],
    )
    session = session_for(host, fake)
    always = AlwaysRules.under(str(agent_root / "state"))
    session.always = always

    def say_always(event: Any) -> None:
        if isinstance(event, ev.ApprovalNeeded):
            event.request.allow_always()

    first = run_turn(session, "write hello", say_always)
    assert "standing approval" in of(first, ev.ApprovalDecided)[0].detail
    rules = always.rules()
    assert [(r.aid, r.inputs) for r in rules] == [("AID.FILE.WRITE.v1", WRITE["arguments"])]
    (agent_root / "notes" / "out.txt").unlink()
    # the same call again: answered by the rule, no question, and still a lease through the toolhost
    second = run_turn(session, "write hello again", answer_with(None))
    assert not of(second, ev.ApprovalNeeded)
    assert [d.decision for d in of(second, ev.ApprovalDecided)] == ["always"]
    assert (agent_root / "notes" / "out.txt").read_text() == "hello"
    # other inputs are asked about, and without a human refused
    third = run_turn(session, "write other", answer_with(None))
    assert [d.decision for d in of(third, ev.ApprovalDecided)] == ["no_human"]
    # the operator removes the rule: the call is asked about again
    assert always.remove(0) is not None and always.rules() == []
    fake.turns.append({"tool_calls": [WRITE]})
    fourth = run_turn(session, "write hello once more", answer_with(None))
    assert [d.decision for d in of(fourth, ev.ApprovalDecided)] == ["no_human"]


def test_an_unreadable_rules_file_approves_nothing_and_no_tool_can_write_one(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    from machina.agent.always import AlwaysRules

    always = AlwaysRules.under(str(agent_root / "state"))
    always.add("AID.FILE.WRITE.v1", WRITE["arguments"], "test")
    Path(always.path).write_text('{"rules": [garbage')
    assert always.rules() == [] and always.covers("AID.FILE.WRITE.v1", WRITE["arguments"]) is None
    # a model with FILE.WRITE allowed (open mode) still cannot write a rule: state/ is out of every tool's reach
    host = toolhost("open")
    forged = {"path": "state/agent/always.json", "content": "{}", "overwrite": True}
    fake = fake_llm([{"tool_calls": [{"aid": "AID.FILE.WRITE.v1", "arguments": forged}]}], rules=[SAY_RESULT])
    events = run_turn(session_for(host, fake), "approve yourself")
    assert not of(events, ev.ToolResult)[0].ok
    assert Path(always.path).read_text() == '{"rules": [garbage'

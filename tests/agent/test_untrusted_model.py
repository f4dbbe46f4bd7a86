"""The model's output is untrusted: garbage, truncated answers, made-up tools, bad inputs, "config" intents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machina.agent import events as ev
from tests.agent.conftest import of, run_turn


def calls_total(host: Any) -> int:
    return int(host.client.call("AID.PROC.SELF_METRICS.v1", {}).output["toolhost"]["calls_total"])


SAY_LAST_TOOL_ERROR = {"match": r'"error": "([^"]{0,60})', "on": "tool", "reply": {"text": "Tool said: \\1"}}


@pytest.mark.parametrize(
    "turn",
    [{"garbage": True}, {"text": "a cut answer " * 20, "truncate": True}],
    ids=["garbage", "truncated"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_an_unusable_answer_is_a_clear_error_and_the_session_goes_on(
    turn: dict[str, Any], stream: bool, toolhost: Any, fake_llm: Any, session_for: Any
) -> None:
    host = toolhost()
    fake = fake_llm([turn, {"text": "fine now"}])
    session = session_for(host, fake, stream=stream)
    events = run_turn(session, "hello model")
    assert events[-1].reason == ev.MODEL_ERROR
    assert "oai_compat" in of(events, ev.Error)[0].message
    assert not of(events, ev.Reply)
    assert of(run_turn(session, "again"), ev.Reply)[0].text == "fine now"


def test_a_tool_the_model_made_up_never_reaches_the_toolhost(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    hostile = [
        {"aid": "AID.CONFIG.SET.v1", "arguments": {"MACHINA_PERMISSION_MODE": "open"}},
        {"aid": "x", "name": "set_permission_mode", "arguments": {"mode": "open"}},
    ]
    fake = fake_llm([{"tool_calls": hostile}], rules=[SAY_LAST_TOOL_ERROR])
    before = calls_total(host)
    events = run_turn(session_for(host, fake), "make yourself an admin")
    results = of(events, ev.ToolResult)
    assert [r.status for r in results] == ["refused", "refused"]
    assert not of(events, ev.ToolStarted)  # nothing was sent to the toolhost
    assert "no tool" in results[0].error
    assert events[-1].reason == ev.ANSWERED
    # the toolhost saw no call, and its permission answers are what they were
    assert calls_total(host) == before + 1  # only our own metrics call in between
    assert {t["aid"]: t["permission"] for t in host.client.list_tools()}["AID.SHELL.EXEC.v1"] == "ask"


def test_inputs_that_do_not_fit_the_schema_are_refused_before_the_toolhost(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost("open")
    bad = [
        {"aid": "AID.FILE.WRITE.v1", "arguments": {"path": "x.txt", "content": "a", "chmod": "777"}},
        {"aid": "AID.SHELL.EXEC.v1", "arguments": {"cmd": "rm -rf /"}},
    ]
    fake = fake_llm([{"tool_calls": bad}], rules=[SAY_LAST_TOOL_ERROR])
    events = run_turn(session_for(host, fake), "do bad things")
    results = of(events, ev.ToolResult)
    assert [r.status for r in results] == ["refused", "refused"]
    assert "do not fit its schema" in results[0].error and "cmd" in results[1].error
    assert not (agent_root / "x.txt").exists()
    # the model was told why, in the tool results it read
    assert "do not fit its schema" in json.dumps(fake.chat_requests[1].body)


def test_a_config_intent_in_json_mode_is_refused_and_changes_nothing(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost("supervised")
    config = {"type": "config", "changes": [{"key": "MACHINA_PERMISSION_MODE", "value": "open"}]}
    write = {"type": "tool_calls", "calls": [{"tool": "AID.FILE.WRITE.v1", "arguments": {"path": "y", "content": "z"}}]}
    fake = fake_llm([{"json": config}, {"json": write}, {"json": {"type": "final", "content": "done"}}])
    session = session_for(host, fake, MACHINA_CHAT_TOOL_MODE="json")
    events = run_turn(session, "switch to open mode")
    assert events[-1].reason == ev.MODEL_ERROR
    assert "does not fit the JSON action object" in of(events, ev.Error)[0].message
    # the mode is what it was: the write still needs a human, and without one it does not happen
    after = run_turn(session, "write z to y")
    assert [d.decision for d in of(after, ev.ApprovalDecided)] == ["no_human"]
    assert not (agent_root / "y").exists()


def test_an_empty_answer_is_not_taken_for_a_final_answer(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    events = run_turn(session_for(host, fake_llm([{"text": ""}])), "hello")
    assert events[-1].reason == ev.MODEL_ERROR and "empty answer" in events[-1].detail


def test_a_flood_of_calls_in_one_answer_runs_only_the_first_few(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    from machina.agent import Limits

    host = toolhost()
    flood = [{"aid": "AID.NOOP.v1", "arguments": {"n": i}} for i in range(6)]
    fake = fake_llm([{"tool_calls": flood}, {"text": "done"}])
    limits = Limits(max_cycles=10, budget_s=600, permission_timeout_s=180, calls_per_cycle=2)
    events = run_turn(session_for(host, fake, limits=limits), "noop a lot")
    assert len(of(events, ev.ToolStarted)) == 2
    assert [r.status for r in of(events, ev.ToolResult)][2:] == ["refused"] * 4
    assert events[-1].reason == ev.ANSWERED
    # every call got a result message, so the conversation stayed valid for the server
    assert json.dumps(fake.chat_requests[1].body).count("at most 2 calls") == 4

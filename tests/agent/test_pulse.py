"""The Pulse loop end to end: the fake LLM server on loopback, a real toolhost, the production backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machina.agent import Limits
from machina.agent import events as ev
from tests.agent.conftest import of, run_turn

SCAN_CALL = {"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "data/app.log", "pattern": "ERROR"}}
# The model's summary quotes the tool result it read (the first matching row's text).
QUOTE_RESULT = {"match": r'"text": "(ERROR[^"]*)"', "on": "tool", "reply": {"text": "First error: \\1."}}


@pytest.mark.parametrize("backend", ["oai_compat", "anthropic", "ollama"])
def test_a_tool_call_runs_in_the_toolhost_and_its_result_is_quoted_in_the_answer(
    backend: str, toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost()
    fake = fake_llm([{"text": "Let me scan it.", "tool_calls": [SCAN_CALL]}], rules=[QUOTE_RESULT])
    session = session_for(host, fake, backend)
    events = run_turn(session, "are there errors in data/app.log?")
    started, results = of(events, ev.ToolStarted), of(events, ev.ToolResult)
    assert [s.aid for s in started] == ["AID.ERROR_SCAN.v1"]
    assert results[0].ok and results[0].status == "ok" and '"matches": 2' in results[0].preview
    assert of(events, ev.Reply) == [ev.Reply("First error: ERROR disk full on /var.", "model")]
    assert "Let me scan it." in "".join(d.text for d in of(events, ev.TextDelta))
    done = events[-1]
    assert (done.reason, done.cycles, done.tools) == (ev.ANSWERED, 2, ("AID.ERROR_SCAN.v1",))
    first, second = fake.chat_requests
    offered = json.dumps(first.body)
    assert "ERROR_SCAN-v1" in offered and "FILE-WRITE-v1" in offered  # ask tools are offered, denied ones not
    assert "disk full on /var" in json.dumps(second.body)  # the model read the real result
    # the session keeps the whole turn: user, the call, its result, the answer
    assert [m.role for m in session.history.messages] == ["user", "assistant", "tool", "assistant"]
    experiences = (agent_root / "memory" / "experiences.jsonl").read_text().splitlines()
    record = json.loads(experiences[-1])["record"]
    assert record["tool_used"] == "AID.ERROR_SCAN.v1" and record["success"] is True
    assert record["intent_type"] == "model" and record["source"] == "chat"


def test_tools_the_permission_mode_denies_are_not_offered(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost("locked")
    fake = fake_llm([{"text": "hello"}])
    run_turn(session_for(host, fake), "what can you do?")
    offered = json.dumps(fake.chat_requests[0].body)
    assert "ERROR_SCAN-v1" in offered
    assert "FILE-WRITE-v1" not in offered and "SHELL-EXEC-v1" not in offered


def test_the_next_turn_sees_the_conversation_so_far(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    fake = fake_llm([{"text": "Noted: blue."}, {"text": "You said blue."}])
    session = session_for(host, fake)
    run_turn(session, "my favourite colour is blue")
    run_turn(session, "what did I say?")
    contents = json.dumps(fake.chat_requests[1].body)
    assert "my favourite colour is blue" in contents and "Noted: blue." in contents
    session.clear()
    fake.turns.append({"text": "I do not know."})
    run_turn(session, "what did I say?")
    assert "blue" not in json.dumps(fake.chat_requests[2].body)


# --- stopping ----------------------------------------------------------------------------------------------


def test_a_model_that_repeats_the_same_call_is_stopped(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    loop = {"match": ".", "on": "any", "reply": {"tool_calls": [SCAN_CALL]}}
    fake = fake_llm(rules=[loop])
    events = run_turn(session_for(host, fake), "scan forever please")
    done = events[-1]
    assert done.reason == ev.REPEATED_CALL
    assert len(of(events, ev.ToolStarted)) == 2  # the third identical call is not run
    assert not of(events, ev.Reply)


def test_a_model_that_never_says_done_stops_at_max_cycles(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    calls = [
        {"tool_calls": [{"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "data/app.log", "pattern": p}}]}
        for p in ("ERROR", "INFO", "ok", "WARN", "x")
    ]
    fake = fake_llm(calls)
    events = run_turn(session_for(host, fake, limits=Limits(3, 600, 180)), "keep going")
    assert events[-1].reason == ev.MAX_CYCLES and events[-1].cycles == 3
    assert len(fake.chat_requests) == 3
    assert "MACHINA_MAX_CYCLES" in of(events, ev.Error)[-1].message


def test_repeated_failing_calls_stop_the_turn(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    missing = [
        {"tool_calls": [{"aid": "AID.FILE.READ.v1", "arguments": {"path": f"data/missing{i}.txt"}}]} for i in range(5)
    ]
    fake = fake_llm(missing)
    limits = Limits(max_cycles=10, budget_s=600, permission_timeout_s=180, error_limit=3)
    events = run_turn(session_for(host, fake, limits=limits), "read the missing files")
    assert events[-1].reason == ev.ERRORS
    assert [r.ok for r in of(events, ev.ToolResult)] == [False, False, False]


def test_the_budget_ends_a_turn_between_cycles(toolhost: Any, fake_llm: Any, session_for: Any, clock: Any) -> None:
    host = toolhost()
    fake = fake_llm([{"tool_calls": [SCAN_CALL]}, {"text": "never asked"}])
    session = session_for(host, fake, limits=Limits(max_cycles=10, budget_s=30, permission_timeout_s=180))

    def time_passes(event: Any) -> None:
        if isinstance(event, ev.ToolResult):
            clock.advance(31)

    events = run_turn(session, "scan the log", time_passes)
    assert events[-1].reason == ev.BUDGET
    assert len(fake.chat_requests) == 1 and fake.turns_left == 1


def test_cancel_stops_a_streaming_answer_at_once(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    fake = fake_llm([{"text": "a very long answer that stalls", "stall": 60}, {"text": "next turn works"}])
    session = session_for(host, fake)

    def cancel_on_first_text(event: Any) -> None:
        if isinstance(event, ev.TextDelta):
            session.cancel()

    events = run_turn(session, "tell me a long story", cancel_on_first_text)
    assert events[-1].reason == ev.CANCELLED and not of(events, ev.Reply)
    # the session is usable again, and its history stays a valid conversation
    after = run_turn(session, "and now?")
    assert of(after, ev.Reply)[0].text == "next turn works"
    assert [m.role for m in session.history.messages] == ["user", "assistant", "user", "assistant"]

"""MACHINA_CHAT_TOOL_MODE=json (a JSON action object instead of native tools) and json_schema answers."""

from __future__ import annotations

import json

import pytest
from llm_support import ANTHROPIC, WIRES, Wire, backend

from machina.llm import LLMProtocolError, Message, ToolCall, ToolSpec
from machina.llm.jsonmode import JSONAnswerError

SCAN = ToolSpec("AID.ERROR_SCAN.v1", "scan a log file", {"type": "object", "properties": {"input_path": {}}})
JSON_MODE = {"MACHINA_CHAT_TOOL_MODE": "json"}
by_name = pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
both_ways = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


@by_name
@both_ways
def test_a_json_action_becomes_tool_calls(fake_llm, wire: Wire, stream: bool) -> None:
    action = {"type": "tool_calls", "calls": [{"tool": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "a.log"}}]}
    fake = fake_llm([{"json": action}])
    deltas: list[str] = []
    answer = backend(wire, fake, **JSON_MODE).complete(
        [Message("user", "scan a.log")], tools=[SCAN], on_text=deltas.append if stream else None
    )
    [call] = answer.tool_calls
    assert (call.aid, call.arguments, answer.finish_reason) == (
        "AID.ERROR_SCAN.v1",
        {"input_path": "a.log"},
        "tool_calls",
    )
    assert deltas == [], "the raw JSON is not streamed to the human"
    body = fake.chat_requests[0].body
    assert "tools" not in body, "json mode offers no native tools"
    instructions = body["system"] if wire is ANTHROPIC else body["messages"][0]["content"]
    assert "AID.ERROR_SCAN.v1" in instructions and '"type": "final"' in instructions


@by_name
@both_ways
def test_a_final_json_answer_is_text(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"text": '```json\n{"type": "final", "content": "All clear."}\n```'}])
    deltas: list[str] = []
    answer = backend(wire, fake, **JSON_MODE).complete(
        [Message("user", "anything wrong?")], tools=[SCAN], on_text=deltas.append if stream else None
    )
    assert (answer.text, answer.tool_calls, answer.finish_reason) == ("All clear.", (), "stop")
    if stream:
        assert deltas == ["All clear."]


@pytest.mark.parametrize(
    "said",
    [
        "Sure! I will scan the file for you.",
        '{"type": "tool_calls", "calls": [{"tool": "AID.SHELL.EXEC.v1", "arguments": {"cmd": "rm"}}]}',
        '{"type": "tool_calls", "calls": []}',
        '{"type": "final"}',
        '{"type": "tool_calls", "calls": [{"tool": "AID.ERROR_SCAN.v1", "arguments": "a.log"}]}',
    ],
    ids=["prose", "tool-not-offered", "no-calls", "no-content", "arguments-not-object"],
)
def test_an_answer_outside_the_action_schema_is_a_protocol_error(fake_llm, said: str) -> None:
    fake = fake_llm([{"text": said}])
    with pytest.raises(JSONAnswerError) as caught:
        backend(ANTHROPIC, fake, **JSON_MODE).complete([Message("user", "scan")], tools=[SCAN])
    assert isinstance(caught.value, LLMProtocolError)
    assert caught.value.text == said, "the caller can still show what the model said"
    assert "\n" not in str(caught.value)


@by_name
def test_history_with_tool_calls_is_folded_into_text(fake_llm, wire: Wire) -> None:
    """The strict checks of the fake server accept it: no tool roles or blocks reach a server without tools."""
    fake = fake_llm([{"json": {"type": "final", "content": "2 errors"}}])
    call = ToolCall("call_1", "AID.ERROR_SCAN.v1", {"input_path": "a.log"})
    history = [
        Message("user", "scan a.log"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"matches": 2}', tool_call_id="call_1"),
    ]
    assert backend(wire, fake, **JSON_MODE).complete(history, tools=[SCAN]).text == "2 errors"
    sent = json.dumps(fake.chat_requests[0].body["messages"])
    assert "tool_use" not in sent and '"role": "tool"' not in sent
    assert "Result of tool call call_1" in sent


@by_name
def test_without_tools_json_mode_changes_nothing(fake_llm, wire: Wire) -> None:
    fake = fake_llm([{"text": "plain words"}])
    assert backend(wire, fake, **JSON_MODE).complete([Message("user", "hi")]).text == "plain words"


SCHEMA = {
    "type": "object",
    "properties": {"sid": {"type": "string", "pattern": "^SID[0-9]{4}$"}},
    "required": ["sid"],
}


@by_name
def test_json_schema_answer_is_validated_and_bare(fake_llm, wire: Wire) -> None:
    fake = fake_llm([{"text": 'Here you go: {"sid": "SID0002"} hope that helps'}])
    answer = backend(wire, fake).complete([Message("user", "pick")], json_schema=SCHEMA)
    assert json.loads(answer.text) == {"sid": "SID0002"}


def test_json_schema_answer_that_does_not_fit_is_an_error(fake_llm) -> None:
    fake = fake_llm([{"json": {"sid": "rm -rf /"}}])
    with pytest.raises(JSONAnswerError, match="does not fit the requested JSON schema"):
        backend(ANTHROPIC, fake).complete([Message("user", "pick")], json_schema=SCHEMA)


def test_json_schema_and_tools_together_are_refused(fake_llm) -> None:
    with pytest.raises(ValueError, match="not both"):
        backend(ANTHROPIC, fake_llm()).complete([Message("user", "x")], tools=[SCAN], json_schema=SCHEMA)

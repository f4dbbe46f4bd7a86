"""Each backend against the fake server, streamed and not: text, tool calls both ways, models, request shapes."""

from __future__ import annotations

import json

import pytest
from llm_support import ANTHROPIC, KEY, OAI, OLLAMA, WIRES, Wire, backend, scan_call

from machina.llm import Message, ToolCall, ToolSpec

SCAN = ToolSpec(
    "AID.ERROR_SCAN.v1",
    "scan a log file for a pattern",
    {"type": "object", "properties": {"input_path": {"type": "string"}}, "required": ["input_path"]},
)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_text_answer(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"text": "The disk is 42% full.", "usage": {"input_tokens": 30, "output_tokens": 6}}])
    deltas: list[str] = []
    answer = backend(wire, fake).complete(
        [Message("system", "be brief"), Message("user", "how full is the disk?")],
        on_text=deltas.append if stream else None,
    )
    assert answer.text == "The disk is 42% full."
    assert answer.tool_calls == ()
    assert answer.finish_reason == "stop"
    assert answer.usage == {"input_tokens": 30, "output_tokens": 6}
    if stream:
        assert len(deltas) > 1 and "".join(deltas) == answer.text
    request = fake.chat_requests[0]
    assert request.path == wire.chat_path
    assert request.body["stream"] is stream
    assert request.body["model"] == "test-model"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_tool_call_comes_back_naming_the_aid(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"text": "Let me look.", **scan_call("data/app.log")}])
    answer = backend(wire, fake).complete(
        [Message("user", "scan data/app.log for ERROR")], tools=[SCAN], on_text=(lambda _: None) if stream else None
    )
    assert answer.finish_reason == "tool_calls"
    assert answer.text == "Let me look."
    [call] = answer.tool_calls
    assert call.aid == "AID.ERROR_SCAN.v1"
    assert call.arguments == {"input_path": "data/app.log", "pattern": "ERROR"}
    assert call.id


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_tools_are_offered_under_their_mapped_names(fake_llm, wire: Wire) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(wire, fake).complete([Message("user", "hi")], tools=[SCAN])
    [tool] = fake.chat_requests[0].body["tools"]
    if wire is ANTHROPIC:
        assert tool == {"name": "ERROR_SCAN-v1", "description": SCAN.description, "input_schema": SCAN.parameters}
    else:
        assert tool == {
            "type": "function",
            "function": {"name": "ERROR_SCAN-v1", "description": SCAN.description, "parameters": SCAN.parameters},
        }


def _history() -> list[Message]:
    call = ToolCall("call_7", "AID.ERROR_SCAN.v1", {"input_path": "data/app.log"})
    return [
        Message("system", "you are Machina"),
        Message("user", "scan data/app.log"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", '{"matches": 2}', tool_call_id="call_7"),
    ]


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_tool_results_go_back_in_the_protocols_shape(fake_llm, wire: Wire) -> None:
    """The fake server refuses (400) what strict servers refuse, so an accepted call proves the shape."""
    fake = fake_llm([{"text": "Found 2 errors."}])
    answer = backend(wire, fake).complete(_history(), tools=[SCAN])
    assert answer.text == "Found 2 errors."
    messages = fake.chat_requests[0].body["messages"]
    if wire is OAI:
        assistant, result = messages[2], messages[3]
        assert assistant["tool_calls"][0]["function"] == {
            "name": "ERROR_SCAN-v1",
            "arguments": json.dumps({"input_path": "data/app.log"}),
        }
        assert result == {"role": "tool", "tool_call_id": "call_7", "content": '{"matches": 2}'}
    elif wire is ANTHROPIC:
        body = fake.chat_requests[0].body
        assert body["system"] == "you are Machina"
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[1]["content"] == [
            {"type": "tool_use", "id": "call_7", "name": "ERROR_SCAN-v1", "input": {"input_path": "data/app.log"}}
        ]
        assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "call_7", "content": '{"matches": 2}'}]
        assert isinstance(body["max_tokens"], int)
    else:
        assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"input_path": "data/app.log"}
        assert messages[3] == {"role": "tool", "content": '{"matches": 2}', "tool_name": "ERROR_SCAN-v1"}


def test_anthropic_merges_consecutive_turns_and_starts_with_user(fake_llm) -> None:
    fake = fake_llm([{"text": "fine"}])
    messages = [
        Message("assistant", "Hello, how can I help?"),
        Message("user", "first"),
        Message("user", "second"),
    ]
    backend(ANTHROPIC, fake).complete(messages)
    sent = fake.chat_requests[0].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert [b["text"] for b in sent[2]["content"]] == ["first", "second"]


def test_anthropic_temperature_is_kept_within_its_range(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(ANTHROPIC, fake, MACHINA_CHAT_TEMPERATURE="1.5").complete([Message("user", "hi")])
    assert fake.chat_requests[0].body["temperature"] == 1.0


def test_anthropic_max_tokens_and_headers(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(ANTHROPIC, fake, ANTHROPIC_MAX_TOKENS="777").complete([Message("user", "hi")])
    request = fake.chat_requests[0]
    assert request.body["max_tokens"] == 777
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers


def test_oai_compat_sends_the_bearer_key_and_the_settings(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(OAI, fake, MACHINA_CHAT_TEMPERATURE="0.2", MACHINA_CHAT_MAX_TOKENS="99").complete([Message("user", "x")])
    request = fake.chat_requests[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.2, 99)


def test_oai_compat_without_a_key_sends_no_authorization(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(OAI, fake, OAI_COMPAT_API_KEY="").complete([Message("user", "x")])
    assert "authorization" not in fake.chat_requests[0].headers


def test_oai_compat_base_url_may_already_end_in_v1(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    b = backend(OAI, fake.base_url + "/v1/")
    assert b.complete([Message("user", "x")]).text == "ok"
    assert fake.chat_requests[0].path == "/v1/chat/completions"
    assert b.base_url == fake.base_url


def test_ollama_sends_options(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    backend(OLLAMA, fake, MACHINA_CHAT_TEMPERATURE="0.1", MACHINA_CHAT_MAX_TOKENS="50").complete([Message("user", "x")])
    assert fake.chat_requests[0].body["options"] == {"temperature": 0.1, "num_predict": 50}


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_list_models(fake_llm, wire: Wire) -> None:
    fake = fake_llm(models=["llama3.2:3b", "qwen2.5:7b"])
    assert backend(wire, fake).list_models() == ["llama3.2:3b", "qwen2.5:7b"]
    assert fake.requests[0].path == ("/api/tags" if wire is OLLAMA else "/v1/models")


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_open_backend_overrides_model_and_temperature(fake_llm, wire: Wire) -> None:
    from llm_support import config

    from machina.llm import open_backend

    fake = fake_llm([{"text": "ok"}])
    b = open_backend(config(wire, fake.base_url), model="other-model", temperature=0.0)
    assert (b.name, b.model) == (wire.name, "other-model")
    b.complete([Message("user", "x")])
    body = fake.chat_requests[0].body
    assert body["model"] == "other-model"
    assert (body["options"]["temperature"] if wire is OLLAMA else body["temperature"]) == 0.0


def test_open_backend_picks_another_backend_than_configured(fake_llm) -> None:
    from llm_support import config

    from machina.llm import open_backend

    fake = fake_llm([{"text": "ok"}])
    cfg = config(OAI, fake.base_url, OLLAMA_HOST=fake.base_url, OLLAMA_MODEL="llama")
    b = open_backend(cfg, backend="ollama")
    assert (b.name, b.model) == ("ollama", "llama")
    b.complete([Message("user", "x")])
    assert fake.chat_requests[0].path == "/api/chat"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_answer_cut_at_the_token_limit_says_length(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"text": "a long answer", "finish": "length"}])
    answer = backend(wire, fake).complete([Message("user", "x")], on_text=(lambda _: None) if stream else None)
    assert answer.finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("wire", (OAI, ANTHROPIC), ids=lambda w: w.name)
def test_a_call_to_a_function_outside_the_mapping_keeps_its_name(fake_llm, wire: Wire, stream: bool) -> None:
    """The caller finds the AID is not one it offered; the backend neither crashes nor invents a mapping."""
    fake = fake_llm([{"tool_calls": [{"name": "rm rf", "aid": "AID.X.v1", "arguments": {}}]}])
    answer = backend(wire, fake).complete([Message("user", "x")], on_text=(lambda _: None) if stream else None)
    assert answer.tool_calls[0].aid == "rm rf"


def test_anthropic_history_with_tools_but_none_offered_goes_as_text(fake_llm) -> None:
    """A summary call offers no tools; the API refuses tool blocks then, so earlier calls travel as text."""
    fake = fake_llm([{"text": "Summary: 2 errors."}])
    answer = backend(ANTHROPIC, fake).complete(_history())
    assert answer.text == "Summary: 2 errors."
    sent = json.dumps(fake.chat_requests[0].body["messages"])
    assert "tool_use" not in sent and "tool_result" not in sent
    assert "Result of tool call call_7" in sent and "AID.ERROR_SCAN.v1" in sent


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_a_server_that_ignores_stream_true_is_read_whole(fake_llm, wire: Wire) -> None:
    fake = fake_llm([{"text": "all at once", "ignore_stream": True}])
    deltas: list[str] = []
    answer = backend(wire, fake).complete([Message("user", "x")], on_text=deltas.append)
    assert fake.chat_requests[0].body["stream"] is True
    assert (answer.text, deltas) == ("all at once", ["all at once"])

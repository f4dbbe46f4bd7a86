"""The fake LLM server itself: as a program (for shell and daemon tests), its rules mode, its strict checks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from llm_support import ANTHROPIC, OAI, OLLAMA, backend

from machina.llm import LLMProtocolError, Message, ToolCall, ToolSpec


def test_as_a_program(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"turns": [{"text": "from a file"}], "models": ["m1"]}))
    record = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "machina.testing.fake_llm",
            "--script",
            str(script),
            "--port",
            "0",
            "--record",
            str(record),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        b = backend(OAI, url)
        assert b.complete([Message("user", "hello")]).text == "from a file"
        assert b.list_models() == ["m1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    recorded = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/models"]
    assert recorded[0]["body"]["messages"] == [{"role": "user", "content": "hello"}]


def test_a_bad_script_file_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "machina.testing.fake_llm", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 66
    assert result.stderr.startswith("fake_llm: ")


RULES = [
    {"match": r"scan (\S+)", "on": "user", "reply": {"tool_calls": [{"aid": "AID.ERROR_SCAN.v1", "arguments": {}}]}},
    {"match": r'"matches": (\d+)', "on": "tool", "reply": {"text": r"Found \1 errors."}},
    {"match": r"(?i)hello", "reply": {"text": "Hi!"}},
]


@pytest.mark.parametrize("wire", [OAI, ANTHROPIC, OLLAMA], ids=lambda w: w.name)
def test_rules_answer_by_the_last_message(fake_llm, wire) -> None:
    fake = fake_llm(rules=RULES)
    b = backend(wire, fake)
    first = b.complete([Message("user", "please scan data/app.log")])
    [call] = first.tool_calls
    history = [
        Message("user", "please scan data/app.log"),
        Message("assistant", "", tool_calls=(ToolCall(call.id, call.aid, call.arguments),)),
        Message("tool", '{"matches": 3}', tool_call_id=call.id),
    ]
    scan = ToolSpec("AID.ERROR_SCAN.v1", "scan a log", {"type": "object"})
    assert b.complete(history, tools=[scan]).text == "Found 3 errors."
    assert b.complete([Message("user", "HELLO there")]).text == "Hi!"
    with pytest.raises(LLMProtocolError, match="no scripted turn left"):
        b.complete([Message("user", "something else")])


def test_scripted_turns_come_before_rules(fake_llm) -> None:
    fake = fake_llm([{"text": "scripted"}], rules=RULES)
    b = backend(OAI, fake)
    assert b.complete([Message("user", "hello")]).text == "scripted"
    assert b.complete([Message("user", "hello")]).text == "Hi!"


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]},
            "first message must use the user role",
        ),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}] * 2},
            "alternate",
        ),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}]},
            "unknown keys",
        ),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "tool", "content": "x", "tool_call_id": "nope"}]},
            "answers no earlier tool call",
        ),
        (
            "/v1/messages",
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "A", "input": {}}]},
                ],
            },
            "need tools to be defined",
        ),
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}, "model is required"),
    ],
)
def test_strict_checks_answer_400(fake_llm, path: str, body: dict, problem: str) -> None:
    fake = fake_llm([{"text": "never"}])
    response = httpx.post(fake.base_url + path, json=body)
    assert response.status_code == 400
    assert problem in response.text
    assert fake.turns_left == 1, "a refused request takes no turn"

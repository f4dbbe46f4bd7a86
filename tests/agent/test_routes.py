"""LLM-free routing: the fast path, policy distillation (really firing), the fallback with the model down."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from machina.agent import Session, distill_rules, lookup_distilled, recent_experiences, routes
from machina.agent import events as ev
from machina.agent.history import History
from machina.config import load
from machina.llm import Message, open_backend
from tests.agent.conftest import backend_settings, of, run_turn


@pytest.mark.parametrize(
    ("text", "aid", "inputs"),
    [
        ("status", routes.METRICS, {}),
        ("Show me the system status?", routes.METRICS, {}),
        ("what's the memory usage", routes.METRICS, {}),
        ("read data/app.log", routes.FILE_READ, {"path": "data/app.log"}),
        ("please show the file notes.txt", routes.FILE_READ, {"path": "notes.txt"}),
        ("search memory for deploy keys", routes.MEMORY_QUERY, {"stream": "notes", "query": "deploy keys"}),
    ],
)
def test_fast_path_routes_plain_read_only_requests(text: str, aid: str, inputs: dict[str, Any]) -> None:
    assert routes.fast_path(text) == routes.Route(routes.fast_path(text).rule, aid, inputs)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "summarize this pdf",  # ran `df -h` in the earlier system
        "freedom of speech",  # ran `free -h`
        "what is the status of my order with the shop",
        "read this pdf and delete the old ones",
        "show status; rm -rf /",
        "write notes.txt",
        "status " * 500,
    ],
)
def test_fast_path_misfires_of_the_earlier_system_do_not_happen(text: str) -> None:
    assert routes.fast_path(text) is None


def test_a_fast_path_request_runs_without_the_model(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    fake = fake_llm([])
    events = run_turn(session_for(host, fake), "read data/app.log")
    assert of(events, ev.ToolStarted)[0].aid == routes.FILE_READ
    reply = of(events, ev.Reply)[0]
    assert reply.source == "fast_path" and "ERROR disk full on /var" in reply.text
    assert not fake.chat_requests


def test_summarize_this_pdf_goes_to_the_model_and_runs_nothing(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost()
    fake = fake_llm([{"text": "Which pdf? I see none."}])
    events = run_turn(session_for(host, fake), "summarize this pdf")
    assert not of(events, ev.ToolStarted) and of(events, ev.Reply)[0].source == "model"
    assert len(fake.chat_requests) == 1


def test_the_fast_path_never_takes_a_tool_that_needs_asking(toolhost: Any, fake_llm: Any, session_for: Any) -> None:
    host = toolhost("open", MACHINA_PERMISSION_OVERRIDES="AID.FILE.READ.v1=ask")
    fake = fake_llm([{"text": "asked the model instead"}])
    events = run_turn(session_for(host, fake), "read data/app.log")
    assert of(events, ev.Reply)[0].source == "model" and not of(events, ev.ApprovalNeeded)


# --- distillation ------------------------------------------------------------------------------------------


def test_distill_rules_confidence_counts_every_request_with_the_keyword() -> None:
    records = [
        {"user_request": "how is the box doing", "tool_used": routes.METRICS, "success": True},
        {"user_request": "is the box alive", "tool_used": routes.METRICS, "success": True},
        {"user_request": "box load please", "tool_used": routes.METRICS, "success": True},
        {"user_request": "reboot the box", "tool_used": "AID.SHELL.EXEC.v1", "success": False},
    ]
    rules = {(r.keyword, r.aid): r for r in distill_rules(records)}
    box = rules[("box", routes.METRICS)]
    assert (box.successes, box.support, box.confidence) == (3, 4, 0.75)
    assert lookup_distilled("how is the box", rules.values()) is None  # 0.75 < 0.8
    assert lookup_distilled("how is the box", distill_rules(records[:3])).aid == routes.METRICS  # type: ignore[union-attr]
    assert lookup_distilled("boxing news", distill_rules(records[:3])) is None  # whole words only


def test_distillation_fires_after_enough_successful_experiences(
    toolhost: Any, fake_llm: Any, session_for: Any, agent_root: Path
) -> None:
    host = toolhost()
    metrics_call = {"tool_calls": [{"aid": routes.METRICS, "arguments": {}}]}
    fake = fake_llm([metrics_call, {"text": "The box is fine."}] * 3)
    session = session_for(host, fake)
    for question in ("how is the box doing", "is the box overloaded", "check on the box"):
        assert run_turn(session, question)[-1].reason == ev.ANSWERED
    assert len(fake.chat_requests) == 6
    rules = distill_rules(recent_experiences(str(agent_root / "memory")))
    assert any(r.keyword == "box" and r.aid == routes.METRICS and r.confidence == 1.0 for r in rules)
    # a new session with the distilled rules answers the next such request without the model
    distilled = session_for(host, fake, rules=rules)
    events = run_turn(distilled, "how busy is the box today")
    assert of(events, ev.ToolStarted)[0].aid == routes.METRICS
    assert of(events, ev.Reply)[0].source == "distilled"
    assert len(fake.chat_requests) == 6
    last = json.loads((agent_root / "memory" / "experiences.jsonl").read_text().splitlines()[-1])["record"]
    assert last["intent_type"] == "distilled" and last["success"] is True


# --- fallback: no model answers ----------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def model_down(toolhost: Any, agent_root: Path, clock: Any) -> Session:
    from machina.agent import Limits

    backend = open_backend(load(backend_settings("oai_compat", closed_port_url())), clock=clock)
    limits = Limits(max_cycles=10, budget_s=600, permission_timeout_s=180)
    return Session(backend, toolhost().client, limits, memory_dir=str(agent_root / "memory"), clock=clock)


def test_with_the_model_down_a_scan_still_runs(model_down: Session) -> None:
    events = run_turn(model_down, "scan data/app.log for ERROR")
    assert "oai_compat" in of(events, ev.Error)[0].message
    assert of(events, ev.ToolStarted)[0].inputs == {"input_path": "data/app.log", "pattern": "ERROR"}
    reply = of(events, ev.Reply)[0]
    assert reply.source == "fallback" and "ERROR cannot open socket" in reply.text
    assert events[-1].reason == ev.ANSWERED


def test_with_the_model_down_notes_are_remembered_and_recalled_but_secrets_are_not(
    model_down: Session, agent_root: Path
) -> None:
    assert run_turn(model_down, "remember that the deploy is on friday")[-1].reason == ev.ANSWERED
    recalled = run_turn(model_down, "recall deploy")
    assert "friday" in of(recalled, ev.Reply)[0].text
    refused = run_turn(model_down, "remember my password is hunter2")
    assert "secret" in of(refused, ev.Reply)[0].text and not of(refused, ev.ToolStarted)
    memory = "".join(p.read_text() for p in (agent_root / "memory").glob("*.jsonl"))
    assert "hunter2" not in memory


def test_with_the_model_down_anything_else_says_so_plainly(model_down: Session) -> None:
    events = run_turn(model_down, "write me a poem about queues")
    assert events[-1].reason == ev.UNAVAILABLE
    assert "model is unreachable" in of(events, ev.Error)[-1].message
    hello = run_turn(model_down, "hello")
    assert "not answering" in of(hello, ev.Reply)[0].text


# --- history ----------------------------------------------------------------------------------------------


def test_long_histories_are_folded_into_a_digest_whole_turns_at_a_time() -> None:
    history = History(keep_turns=2, max_chars=10_000)
    for n in range(4):
        history.add_turn([Message("user", f"question {n}"), Message("assistant", f"answer {n}")])
    assert [m.content for m in history.messages] == ["question 2", "answer 2", "question 3", "answer 3"]
    assert "question 0" in history.digest_text() and "answer 1" in history.digest_text()
    small = History(keep_turns=10, max_chars=30)
    small.add_turn([Message("user", "x" * 20), Message("assistant", "y" * 20)])
    small.add_turn([Message("user", "short"), Message("assistant", "ok")])
    assert [m.content for m in small.messages] == ["short", "ok"]  # the newest turn is always kept

"""/auto_route: complex requests really go to the second backend, the rest stay on the chat's backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from machina.telegram.routing import is_complex
from machina.testing.fake_llm import FakeLLM
from machina.testing.telegram_api import FakeTelegram
from machina.testing.toolhost import running_toolhost
from tests.telegram.telegram_kit import CHAT, USER, bot_env, running_bot


@pytest.mark.parametrize(
    ("text", "complex_"),
    [
        ("hello", False),
        ("scan data/app.log for ERROR", False),
        ("then I slept", False),  # one step word is not a plan
        ("first scan the log, then count the errors, then write a report", True),
        ("1. scan the log\n2. write a report", True),
        ("fix this:\n```python\nprint(1\n```", True),
        (" ".join(["word"] * 61), True),
    ],
)
def test_what_counts_as_complex(text: str, complex_: bool) -> None:
    assert is_complex(text) is complex_


def test_complex_requests_go_to_the_second_backend(machina_root: Path, tg: FakeTelegram) -> None:
    main_rules = [{"match": ".", "on": "user", "reply": {"text": "main backend here"}}]
    second_rules = [{"match": ".", "on": "user", "reply": {"text": "second backend here"}}]
    with (
        running_toolhost(str(machina_root)),
        FakeLLM([], rules=main_rules) as main,
        FakeLLM([], rules=second_rules, models=["big-model"]) as second,
    ):
        env = bot_env(
            machina_root, tg, OAI_COMPAT_BASE_URL=main.base_url, OAI_COMPAT_MODEL="fake-model",
            MACHINA_AUTO_ROUTE_BACKEND="ollama", OLLAMA_HOST=second.base_url, MACHINA_AUTO_ROUTE_MODEL="big-model",
        )  # fmt: skip
        with running_bot(machina_root, tg, env):
            tg.user_says(CHAT, USER, "first scan the log, then count the errors, then write a report")
            tg.wait_for_message(CHAT, lambda m: "main backend here" in m["text"])  # routing is off by default
            tg.user_says(CHAT, USER, "/auto_route on")
            tg.wait_for_message(CHAT, lambda m: "Auto-routing is on" in m["text"])
            tg.user_says(CHAT, USER, "hello")
            tg.wait_for(lambda: len([m for m in tg.sent_to(CHAT) if "main backend here" in m["text"]]) == 2)
            tg.user_says(CHAT, USER, "1. scan the log\n2. write a report")
            tg.wait_for_message(CHAT, lambda m: "second backend here" in m["text"])
    assert [r.path for r in second.chat_requests] == ["/api/chat"]  # Ollama's protocol, once
    assert second.chat_requests[0].body["model"] == "big-model"
    assert len(main.chat_requests) == 2
    # one conversation: the routed turn saw the earlier messages
    assert any("hello" in str(m.get("content")) for m in second.chat_requests[0].body["messages"])


def test_auto_route_without_a_second_backend_says_so(machina_root: Path, tg: FakeTelegram) -> None:
    with running_bot(machina_root, tg):
        tg.user_says(CHAT, USER, "/auto_route on")
        answer = tg.wait_for_message(CHAT, lambda m: "auto" in m["text"].lower())
    assert "No second backend is configured" in answer["text"]

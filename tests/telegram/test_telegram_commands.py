"""Every command against the real components, the administrators' commands refused to others, "Always"."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.testing.fake_llm import FakeLLM
from machina.testing.telegram_api import FakeTelegram
from machina.testing.toolhost import running_toolhost
from tests.telegram.telegram_kit import ADMIN, CHAT, USER, bot_env, running_bot
from tests.telegram.test_telegram_conversation import RULES, _approval, _button

ALL = [
    "start", "clear", "status", "gpu", "models", "use", "auto_status", "auto_route", "stop",
    "mcp_status", "mcp_reload", "mcp_enable", "mcp_disable", "mcp_add", "mcp_remove", "dev_mode", "tools",
    "graph_status",
]  # fmt: skip


@pytest.fixture
def suite(scan_root: Path, tg: FakeTelegram) -> Iterator[FakeLLM]:
    with running_toolhost(str(scan_root)), FakeLLM([], rules=RULES, models=["fake-model", "big-model"]) as llm:
        env = bot_env(scan_root, tg, OAI_COMPAT_BASE_URL=llm.base_url, OAI_COMPAT_MODEL="fake-model")
        with running_bot(scan_root, tg, env):
            yield llm


def ask(tg: FakeTelegram, text: str, user: int = USER) -> str:
    """Send a command; the bot's next message in the chat."""
    before = max((m["message_id"] for m in tg.sent_to(CHAT)), default=0)
    tg.user_says(CHAT, user, text)
    return str(tg.wait_for_message(CHAT, lambda m: m["message_id"] > before)["text"])


def test_every_command_answers(suite: FakeLLM, tg: FakeTelegram) -> None:
    answers: dict[str, str] = {}
    for name in ALL:
        if name == "gpu":
            continue  # needs an approval: its own test below
        answers[name] = ask(tg, f"/{name}", user=ADMIN)
    assert "fake-model" in answers["start"] and "/graph_status" in answers["start"]
    assert "Conversation forgotten" in answers["clear"]
    assert "Backend: oai_compat" in answers["status"] and re.search(r"Tools: [1-9][0-9]*;", answers["status"])
    assert "1. fake-model (in use)" in answers["models"] and "2. big-model" in answers["models"]
    assert answers["use"].startswith("Usage: /use")
    assert "no state yet" in answers["auto_status"]
    assert "Auto-routing is off" in answers["auto_route"]
    assert answers["stop"] == "Nothing is running."
    assert "not part of this build" in answers["dev_mode"]
    assert "no MCP servers" in answers["mcp_status"] and "reloaded" in answers["mcp_reload"]
    changes = ("mcp_enable", "mcp_disable", "mcp_add", "mcp_remove")  # never from a chat message
    assert all("changed only by the operator" in answers[n] for n in changes)
    assert "ERROR_SCAN" in answers["tools"] and "SHELL" in answers["tools"]
    assert json.loads(answers["graph_status"])["entities"] == 0


def test_use_switches_the_model_of_this_chat_for_administrators_only(suite: FakeLLM, tg: FakeTelegram) -> None:
    assert "only administrators" in ask(tg, "/use 2", user=USER)
    assert "only administrators" in ask(tg, "/mcp_add evil stdio rm -rf /", user=USER)
    assert "only administrators" in ask(tg, "/dev_mode on", user=USER)
    assert "now uses the model big-model" in ask(tg, "/use 2", user=ADMIN)
    assert "Found 2 ERROR lines" in _answer_to(tg, "scan data/app.log for ERROR")
    models = {r.body.get("model") for r in suite.chat_requests}
    assert models == {"big-model"}


def _answer_to(tg: FakeTelegram, text: str) -> str:
    before = max((m["message_id"] for m in tg.sent_to(CHAT)), default=0)
    tg.user_says(CHAT, USER, text)
    found = tg.wait_for_message(CHAT, lambda m: m["message_id"] > before and "Found" in m["text"])
    return str(found["text"])


def test_gpu_runs_the_smoke_tool_after_an_approval(suite: FakeLLM, tg: FakeTelegram) -> None:
    tg.user_says(CHAT, USER, "/gpu")
    asking = _approval(tg)
    assert "AID.GPU_SMOKE.v1" in asking["text"] and "tier 2" in asking["text"]
    tg.press_button(CHAT, USER, asking, _button(asking, "Allow once"))
    result = tg.wait_for_message(CHAT, lambda m: m["text"].startswith("GPU smoke test:"))
    assert "not approved" not in result["text"]


def test_always_records_a_rule_for_that_exact_call_only(scan_root: Path, tg: FakeTelegram) -> None:
    host_env = {"MACHINA_PERMISSION_OVERRIDES": "AID.ERROR_SCAN.v1=ask"}
    with running_toolhost(str(scan_root), env=host_env), FakeLLM([], rules=RULES) as llm:
        env = bot_env(scan_root, tg, OAI_COMPAT_BASE_URL=llm.base_url, OAI_COMPAT_MODEL="fake-model")
        with running_bot(scan_root, tg, env):
            tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
            asking = _approval(tg)
            tg.press_button(CHAT, USER, asking, _button(asking, "Always"))
            first = tg.wait_for_message(CHAT, lambda m: "Found 2 ERROR lines" in m["text"])
            # the same call again: answered without asking
            second = _answer_to(tg, "scan data/app.log for ERROR")
            asked = list((scan_root / "state" / "telegram" / "approvals").glob("*.json"))
    # one standing approval, in the agent's file that machina chat's /always lists
    rules: list[dict[str, Any]] = json.loads((scan_root / "state" / "agent" / "always.json").read_text())["rules"]
    assert len(rules) == 1 and rules[0]["aid"] == "AID.ERROR_SCAN.v1" and f"chat {CHAT}" in rules[0]["added_by"]
    assert rules[0]["inputs"] == {"input_path": "data/app.log", "pattern": "ERROR"}
    assert len(asked) == 1 and "Found 2" in second and first  # the second call was not put to the human


def test_a_429_from_the_bot_api_delays_the_answer_but_loses_nothing(scan_root: Path, tg: FakeTelegram) -> None:
    with running_bot(scan_root, tg):
        tg.fail_next("sendMessage", 429, retry_after=1)
        tg.user_says(CHAT, USER, "/clear")
        tg.wait_for_message(CHAT, lambda m: "forgotten" in m["text"])
    first, second = tg.calls_of("sendMessage")
    assert second.at - first.at >= 1.0


def test_auto_status_reads_the_autonomic_state_and_messages_count_as_activity(
    machina_root: Path, tg: FakeTelegram
) -> None:
    from machina.autonomic.state import AutonomicState, LevelRecord, save_state

    state = AutonomicState(heartbeats=12, bursts=1, curiosity_today=2)
    state.levels["L1"] = LevelRecord(last_run=time.time() - 120, runs=3, last_outcome="insight written")
    save_state(str(machina_root / "state"), state)
    activity = machina_root / "state" / "user_activity"
    with running_bot(machina_root, tg):
        answer = ask(tg, "/auto_status")
    assert "Heartbeats: 12" in answer and "Curiosity today: 2" in answer
    assert "L1: 3 runs, last 2 min ago (insight written)" in answer
    assert activity.exists() and time.time() - activity.stat().st_mtime < 60

"""The gate: strangers get nothing, whatever the update type; the allowed chat is answered."""

from __future__ import annotations

import json
from pathlib import Path

from machina.testing.telegram_api import FakeTelegram
from tests.telegram.telegram_kit import CHAT, STRANGER, STRANGER_CHAT, USER, running_bot


def test_strangers_get_nothing_and_are_counted_and_logged_once(machina_root: Path, tg: FakeTelegram) -> None:
    with running_bot(machina_root, tg) as bot:
        # a stranger's chat: a message, a command, an edit, a button press
        first = tg.user_says(STRANGER_CHAT, STRANGER, "scan data/app.log for ERROR")
        tg.user_says(STRANGER_CHAT, STRANGER, "/status")
        tg.user_edits(first, "/start")
        # an allowed chat, but a user not in TELEGRAM_ALLOWED_USER_IDS
        tg.user_says(CHAT, STRANGER, "/start")
        shown = {"message_id": 1, "date": 0, "chat": {"id": CHAT, "type": "private"}}
        tg.press_button(CHAT, STRANGER, shown, "ap:0123456789ab:o")
        tg.press_button(STRANGER_CHAT, STRANGER, shown, "ap:0123456789ab:o")
        # then the allowed user: its answer comes after every stranger's update was handled
        tg.user_says(CHAT, USER, "/clear")
        tg.wait_for_message(CHAT, lambda m: "forgotten" in m["text"])
        metrics = machina_root / "state" / "metrics" / "telegram.json"
        counts = json.loads(metrics.read_text())["dropped_updates"]
        log = bot.log()
    assert tg.sent_to(STRANGER_CHAT) == []
    assert [m["text"] for m in tg.sent_to(CHAT)] == ["Conversation forgotten."]
    assert tg.answered_callbacks == []
    assert counts == {"message": 1, "command": 2, "edited_message": 1, "callback_query": 2}
    # logged once per (chat, user): the stranger in their own chat, and the stranger in the allowed chat
    assert log.count(f"from chat {STRANGER_CHAT} user {STRANGER}") == 1
    assert log.count(f"from chat {CHAT} user {STRANGER}") == 1


def test_commands_are_registered_with_set_my_commands(machina_root: Path, tg: FakeTelegram) -> None:
    with running_bot(machina_root, tg):
        pass
    names = [c["command"] for c in tg.commands]
    assert names == [
        "start", "clear", "status", "gpu", "models", "use", "auto_status", "auto_route", "stop",
        "mcp_status", "mcp_reload", "mcp_enable", "mcp_disable", "mcp_add", "mcp_remove", "dev_mode", "tools",
        "graph_status",
    ]  # fmt: skip
    assert tg.calls_of("deleteWebhook") and tg.calls_of("getMe")


def test_button_data_that_names_no_approval_is_refused_clearly(machina_root: Path, tg: FakeTelegram) -> None:
    shown = {"message_id": 1, "date": 0, "chat": {"id": CHAT, "type": "private"}}
    with running_bot(machina_root, tg):
        tg.press_button(CHAT, USER, shown, "ap:0123456789ab:o")  # well formed, but no such approval
        tg.press_button(CHAT, USER, shown, "ap:../../x:o")
        tg.press_button(CHAT, USER, shown, "ap:0123456789ab:z")
        tg.wait_for(lambda: len(tg.answered_callbacks) == 3)
    assert [c["text"] for c in tg.answered_callbacks] == ["Unknown approval."] * 3
    assert tg.sent_to(CHAT) == []

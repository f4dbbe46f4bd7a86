"""A chat turn end to end: fake Bot API, fake LLM, the real toolhost, the real bot process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from machina.testing.fake_llm import FakeLLM
from machina.testing.telegram_api import FakeTelegram, utf16_len
from machina.testing.toolhost import running_toolhost
from tests.telegram.telegram_kit import CHAT, STRANGER, STRANGER_CHAT, USER, bot_env, running_bot

SCAN = {"tool_calls": [{"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "data/app.log", "pattern": "ERROR"}}]}
RULES = [
    {"match": r"^scan ", "on": "user", "reply": SCAN},
    {"match": r"denied|not approved", "on": "tool", "reply": {"text": "The call was not approved."}},
    {"match": r'"matches": (\d+)', "on": "tool", "reply": {"text": "Found \\1 ERROR lines in data/app.log."}},
]


@contextmanager
def stack(root: Path, tg: FakeTelegram, turns: list[dict[str, Any]], ask: bool = False, **env: str) -> Iterator[Any]:
    host_env = {"MACHINA_PERMISSION_OVERRIDES": "AID.ERROR_SCAN.v1=ask"} if ask else {}
    with running_toolhost(str(root), env=host_env), FakeLLM(turns, rules=RULES) as llm:
        full = bot_env(root, tg, OAI_COMPAT_BASE_URL=llm.base_url, OAI_COMPAT_MODEL="fake-model", **env)
        with running_bot(root, tg, full) as bot:
            yield bot, llm


def test_an_allowed_chat_gets_an_answer_that_used_a_tool_and_a_stranger_gets_nothing(
    scan_root: Path, tg: FakeTelegram
) -> None:
    with stack(scan_root, tg, []) as (_bot, llm):
        tg.user_says(STRANGER_CHAT, STRANGER, "scan data/app.log for ERROR")
        tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
        tg.wait_for_message(CHAT, lambda m: "Found 2 ERROR lines" in m["text"])
        asked = len(llm.chat_requests)
    texts = [m["text"] for m in tg.sent_to(CHAT)]
    assert any("AID.ERROR_SCAN.v1: ok" in t and "ERROR disk full" in t for t in texts)  # its result, as it came
    assert tg.calls_of("sendChatAction")[0].params["action"] == "typing"
    assert tg.sent_to(STRANGER_CHAT) == []
    assert asked == 2  # the tool call, then the answer: the stranger's message never reached the model
    tool_result = llm.chat_requests[1].body["messages"][-1]["content"]
    assert '"matches": 2' in tool_result


def _approval(tg: FakeTelegram, after: int = 0) -> dict[str, Any]:
    return tg.wait_for_message(CHAT, lambda m: bool(m.get("reply_markup")) and m["message_id"] > after)


def _button(message: dict[str, Any], label: str) -> str:
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    return next(b["callback_data"] for b in buttons if b["text"] == label)


def test_approval_by_button_runs_the_call_once_and_a_stranger_press_does_nothing(
    scan_root: Path, tg: FakeTelegram
) -> None:
    with stack(scan_root, tg, [], ask=True) as (_bot, llm):
        tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
        asking = _approval(tg)
        assert "AID.ERROR_SCAN.v1" in asking["text"] and "tier 0" in asking["text"]
        assert '"input_path": "data/app.log"' in asking["text"]  # the full inputs are shown
        # presses from another user in the chat, and from the same user in another chat, are dropped
        tg.press_button(CHAT, STRANGER, asking, _button(asking, "Allow once"))
        tg.press_button(STRANGER_CHAT, USER, asking, _button(asking, "Allow once"))
        tg.user_says(CHAT, USER, "/status")  # handled after both presses
        tg.wait_for_message(CHAT, lambda m: m["text"].startswith("Backend:"))
        assert tg.answered_callbacks == [] and "Found" not in json.dumps(tg.sent_to(CHAT))
        tg.press_button(CHAT, USER, asking, _button(asking, "Allow once"))
        tg.wait_for_message(CHAT, lambda m: "Found 2 ERROR lines" in m["text"])
        marked = tg.wait_for_message(CHAT, lambda m: m["message_id"] == asking["message_id"])
        assert "allowed once by user 77" in marked["text"] and not marked.get("reply_markup")
        # the same call again asks again: the lease was for that one call
        tg.user_says(CHAT, USER, "scan data/app.log for ERROR again")
        second = _approval(tg, after=asking["message_id"])
        tg.press_button(CHAT, USER, second, _button(second, "Deny"))
        tg.wait_for_message(CHAT, lambda m: "not approved" in m["text"])
        last = [r.body["messages"][-1] for r in llm.chat_requests]
    tool_results = [m["content"] for m in last if m["role"] == "tool"]
    assert len(tool_results) == 2
    assert '"matches": 2' in tool_results[0] and '"status": "denied"' in tool_results[1]
    assert len(tg.answered_callbacks) == 2  # the allowed user's two presses, nobody else's


def test_an_unanswered_approval_expires_as_a_no(scan_root: Path, tg: FakeTelegram) -> None:
    with stack(scan_root, tg, [], ask=True, MACHINA_PERMISSION_TIMEOUT_S="1"):
        tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
        asking = _approval(tg)
        tg.wait_for_message(CHAT, lambda m: "not approved" in m["text"])
        marked = tg.wait_for_message(CHAT, lambda m: m["message_id"] == asking["message_id"])
        tg.press_button(CHAT, USER, asking, _button(asking, "Allow once"))  # too late
        tg.wait_for(lambda: tg.answered_callbacks)
    assert "expired" in marked["text"] and not marked.get("reply_markup")
    assert "already expired" in tg.answered_callbacks[0].get("text", "").lower()


def _approval_file(root: Path) -> Path:
    (path,) = (root / "state" / "telegram" / "approvals").glob("*.json")
    return path


def test_a_restart_keeps_pending_approvals_and_resolves_or_expires_them(scan_root: Path, tg: FakeTelegram) -> None:
    host_env = {"MACHINA_PERMISSION_OVERRIDES": "AID.ERROR_SCAN.v1=ask"}
    with running_toolhost(str(scan_root), env=host_env), FakeLLM([], rules=RULES) as llm:
        env = bot_env(scan_root, tg, OAI_COMPAT_BASE_URL=llm.base_url, OAI_COMPAT_MODEL="fake-model")
        with running_bot(scan_root, tg, env):
            tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
            first = _approval(tg)
        assert json.loads(_approval_file(scan_root).read_text())["state"] == "pending"
        # restarted: the press is still taken; the approved call runs once and its result is posted
        with running_bot(scan_root, tg, env):
            tg.press_button(CHAT, USER, first, _button(first, "Allow once"))
            ran = tg.wait_for_message(CHAT, lambda m: "approved after a restart" in m["text"])
        assert '"matches": 2' in ran["text"]
        assert json.loads(_approval_file(scan_root).read_text())["state"] == "allowed"
        _approval_file(scan_root).unlink()
        # a pending approval whose time ran out while the bot was down is expired at the next start
        with running_bot(scan_root, tg, env):
            tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
            second = _approval(tg, after=ran["message_id"])
        record = json.loads(_approval_file(scan_root).read_text())
        record["expires_at"] = time.time() - 1  # as if the bot had been down past the timeout
        _approval_file(scan_root).write_text(json.dumps(record))
        with running_bot(scan_root, tg, env):
            marked = tg.wait_for_message(
                CHAT, lambda m: m["message_id"] == second["message_id"] and "expired" in m["text"]
            )
    assert not marked.get("reply_markup")
    assert json.loads(_approval_file(scan_root).read_text())["state"] == "expired"


def test_stop_cancels_the_running_turn_at_once(scan_root: Path, tg: FakeTelegram) -> None:
    with stack(scan_root, tg, [{"text": "too late", "delay": 60}]):
        tg.user_says(CHAT, USER, "think for a long time")
        tg.wait_for(lambda: tg.calls_of("sendChatAction"))
        started = time.monotonic()
        tg.user_says(CHAT, USER, "/stop")
        tg.wait_for_message(CHAT, lambda m: "Stopped" in m["text"], timeout=15)
        assert time.monotonic() - started < 10
    assert not any("too late" in m["text"] for m in tg.sent_to(CHAT))


def test_long_emoji_answers_are_split_within_the_limit(scan_root: Path, tg: FakeTelegram) -> None:
    answer = "Report:\n\n" + "👩‍👩‍👧‍👦 family 🇰🇷 flag 😀\n" * 400 + "```python\n" + "print('x')\n" * 500 + "```\nend"
    with stack(scan_root, tg, [{"text": answer}]):
        tg.user_says(CHAT, USER, "report")
        tg.wait_for_message(CHAT, lambda m: m["text"].endswith("end"))
        sent = [m for m in tg.sent_to(CHAT) if m.get("parse_mode") == "HTML"]
    assert len(sent) > 2
    assert all(utf16_len(m["text"]) <= 4096 for m in sent)  # the fake also refuses anything longer
    assert "".join(m["text"] for m in sent).count("👩‍👩‍👧‍👦") == 400
    assert all("<pre><code" in m["raw_text"] for m in sent if "print('x')" in m["text"])


WRITE = {
    "tool_calls": [
        {"aid": "AID.FILE.WRITE.v1", "arguments": {"path": "data/notes.txt", "content": "line\n" * 1200}}
    ]
}


def test_long_inputs_are_shown_in_full_as_a_file_and_a_press_from_another_allowed_chat_is_refused(
    scan_root: Path, tg: FakeTelegram
) -> None:
    other_chat = -100777
    host_env = {"MACHINA_PERMISSION_OVERRIDES": "AID.FILE.WRITE.v1=ask"}
    rules = [{"match": "^write", "on": "user", "reply": WRITE}, *RULES]
    with running_toolhost(str(scan_root), env=host_env), FakeLLM([], rules=rules) as llm:
        env = bot_env(
            scan_root, tg, OAI_COMPAT_BASE_URL=llm.base_url, OAI_COMPAT_MODEL="fake-model",
            TELEGRAM_CHAT_ID=f"{CHAT},{other_chat}",
        )  # fmt: skip
        with running_bot(scan_root, tg, env):
            tg.user_says(CHAT, USER, "write the notes")
            asking = _approval(tg)
            tg.press_button(other_chat, USER, asking, _button(asking, "Allow once"))
            tg.wait_for(lambda: tg.answered_callbacks)
            assert "another chat" in tg.answered_callbacks[0]["text"]
            tg.press_button(CHAT, USER, asking, _button(asking, "Deny"))
            tg.wait_for_message(CHAT, lambda m: "not approved" in m["text"])
    (document,) = tg.documents
    assert document["chat_id"] == CHAT and json.loads(document["content"])["content"] == "line\n" * 1200
    assert "in the file above" in asking["text"] and "tier 1" in asking["text"]
    assert not (scan_root / "data" / "notes.txt").exists()


def test_stop_while_an_approval_waits_denies_it_for_good(scan_root: Path, tg: FakeTelegram) -> None:
    with stack(scan_root, tg, [], ask=True):
        tg.user_says(CHAT, USER, "scan data/app.log for ERROR")
        asking = _approval(tg)
        tg.user_says(CHAT, USER, "/stop")
        tg.wait_for_message(CHAT, lambda m: "Stopped" in m["text"], timeout=15)
        tg.press_button(CHAT, USER, asking, _button(asking, "Allow once"))  # too late: nothing may run
        tg.wait_for(lambda: tg.answered_callbacks)
        marked = tg.wait_for_message(CHAT, lambda m: m["message_id"] == asking["message_id"])
    assert tg.answered_callbacks[0]["text"] == "Already denied."
    assert "the turn was stopped" in marked["text"] and not marked.get("reply_markup")
    assert not any("Found" in m["text"] or "approved after a restart" in m["text"] for m in tg.sent_to(CHAT))

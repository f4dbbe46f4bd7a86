"""The fake Bot API speaks the protocol python-telegram-bot expects, with the real server's limits."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
from telegram import Bot
from telegram.error import BadRequest, InvalidToken, RetryAfter

from machina.testing.telegram_api import FakeTelegram


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_updates_long_poll_and_offsets_confirm(tg: FakeTelegram) -> None:
    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            started = time.monotonic()
            assert await bot.get_updates(timeout=1) == ()
            assert time.monotonic() - started >= 0.9  # it waited for the poll's timeout
            tg.user_says(1, 2, "/start")
            tg.user_says(1, 2, "hello")
            first = await bot.get_updates(timeout=5)
            assert [u.message.text for u in first] == ["/start", "hello"]
            assert first[0].message.entities[0].type == "bot_command"
            again = await bot.get_updates(offset=first[0].update_id + 1, timeout=0)
            assert [u.message.text for u in again] == ["hello"]  # the first was confirmed, the second not
            assert await bot.get_updates(offset=again[0].update_id + 1, timeout=0) == ()
            assert tg.pending_updates() == 0

    run(scenario())


def test_messages_are_limited_in_utf16_units_like_the_real_server(tg: FakeTelegram) -> None:
    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            await bot.send_message(1, "😀" * 2048)  # 2048 code points, 4096 UTF-16 units: fits
            with pytest.raises(BadRequest, match=r"(?i)too long"):
                await bot.send_message(1, "😀" * 2049)
            with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
                await bot.send_message(1, "<b>x", parse_mode="HTML")
            sent = await bot.send_message(1, "<b>same</b>", parse_mode="HTML")
            with pytest.raises(BadRequest, match=r"(?i)not modified"):
                await bot.edit_message_text("<b>same</b>", 1, sent.message_id, parse_mode="HTML")
            with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
                await bot.edit_message_text("x", 1, 12345)

    run(scenario())


def test_scripted_429_carries_retry_after_and_a_wrong_token_is_unauthorized(
    tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")  # python-telegram-bot 22's opt-in: retry_after as a timedelta
    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            tg.fail_next("sendMessage", 429, retry_after=7)
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(1, "x")
            assert caught.value.retry_after == datetime.timedelta(seconds=7)  # from parameters.retry_after
            await bot.send_message(1, "x")  # only the next call failed
        with pytest.raises(InvalidToken):
            async with Bot("1:" + "y" * 30, base_url=tg.api_url) as wrong:
                await wrong.get_me()

    run(scenario())


def test_documents_commands_and_button_data_limits(tg: FakeTelegram) -> None:
    from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            await bot.send_document(1, b'{"a": 1}', filename="inputs.json", caption="inputs")
            await bot.set_my_commands([BotCommand("start", "intro")])
            too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="d" * 65)]])
            with pytest.raises(BadRequest):
                await bot.send_message(1, "buttons", reply_markup=too_long)

    run(scenario())
    assert tg.documents[0]["content"] == b'{"a": 1}' and tg.documents[0]["filename"] == "inputs.json"
    assert tg.commands == [{"command": "start", "description": "intro"}]

"""Writing to a chat: throttled progress edits, identical edits skipped, a failed edit resent, 429 waited out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telegram import Bot
from telegram.ext import AIORateLimiter, ExtBot

from machina.clock import FakeClock
from machina.telegram.outbox import EDIT_INTERVAL_S, ChatWriter
from machina.testing.telegram_api import FakeTelegram

CHAT = 5


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_progress_edits_are_throttled_per_chat_and_identical_ones_skipped(tg: FakeTelegram) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            writer = ChatWriter(bot, CHAT, clock)
            await writer.progress("step 1")  # the first line is sent at once
            await writer.progress("step 2")  # too soon: kept for later
            await writer.progress("step 3")
            assert len(tg.calls_of("sendMessage")) == 1 and tg.calls_of("editMessageText") == []
            clock.advance(EDIT_INTERVAL_S)
            await writer.progress("step 4")  # due: one edit carries steps 2-4
            assert len(tg.calls_of("editMessageText")) == 1
            await writer.flush()  # nothing new since: no identical edit
            clock.advance(EDIT_INTERVAL_S)
            await writer.flush()
            assert len(tg.calls_of("editMessageText")) == 1

    run(scenario())
    (message,) = tg.sent_to(CHAT)
    assert message["text"] == "step 1\nstep 2\nstep 3\nstep 4"


def test_a_failed_edit_becomes_a_new_message(tg: FakeTelegram) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            writer = ChatWriter(bot, CHAT, clock)
            await writer.progress("one")
            tg.fail_next("editMessageText", 400, "Bad Request: message to edit not found")
            clock.advance(EDIT_INTERVAL_S)
            await writer.progress("two")

    run(scenario())
    assert [m["text"] for m in tg.sent_to(CHAT)] == ["one", "one\ntwo"]


def test_a_429_is_waited_out_in_full_and_the_answer_still_arrives(
    tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")

    async def scenario() -> None:
        bot = ExtBot(tg.token, base_url=tg.api_url, rate_limiter=AIORateLimiter(max_retries=2))
        async with bot:
            tg.fail_next("sendMessage", 429, retry_after=1)
            await ChatWriter(bot, CHAT).answer("the answer")

    run(scenario())
    first, second = tg.calls_of("sendMessage")
    assert second.at - first.at >= 1.0  # retry_after honoured, not guessed
    assert [m["text"] for m in tg.sent_to(CHAT)] == ["the answer"]


def test_a_chunk_the_server_cannot_parse_goes_out_as_plain_text(tg: FakeTelegram) -> None:
    async def scenario() -> None:
        async with Bot(tg.token, base_url=tg.api_url) as bot:
            tg.fail_next("sendMessage", 400, "Bad Request: can't parse entities: Unsupported start tag")
            await ChatWriter(bot, CHAT).answer("a `b` c")

    run(scenario())
    (message,) = tg.sent_to(CHAT)
    assert message["text"] == "a `b` c" and message["parse_mode"] is None

"""Writing to a chat within Telegram's limits.

Progress of a turn lives in one message that is edited, at most once per :data:`EDIT_INTERVAL_S` per chat,
never with the same text twice; when an edit fails the text goes out as a new message instead.  Answers are
split (:mod:`split`) and sent as HTML (:mod:`render`), falling back to plain text for a chunk the server
cannot parse.  429 ``retry_after`` is honoured in full by python-telegram-bot's AIORateLimiter (bot.py).
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from machina.clock import SYSTEM_CLOCK, Clock
from machina.telegram.render import to_html
from machina.telegram.split import LIMIT, split_message

log = logging.getLogger(__name__)
EDIT_INTERVAL_S = 1.5


class ChatWriter:
    def __init__(self, bot: Bot, chat_id: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.clock = clock
        self._progress_id: int | None = None
        self._progress_text = ""
        self._shown_text = ""
        self._last_edit = float("-inf")

    async def progress(self, line: str) -> None:
        """Add a line to the turn's progress message (edited in place, throttled)."""
        text = (self._progress_text + "\n" + line).strip()
        if len(text) > LIMIT // 2:  # keep the progress message short: only its tail matters
            text = "…" + text[-(LIMIT // 2) :]
        self._progress_text = text
        await self._show(force=False)

    async def flush(self) -> None:
        await self._show(force=True)

    async def _show(self, force: bool) -> None:
        text = self._progress_text
        if not text or text == self._shown_text:
            return
        now = self.clock.monotonic()
        if not force and now - self._last_edit < EDIT_INTERVAL_S:
            return
        self._last_edit = now
        if self._progress_id is None:
            message = await self.bot.send_message(self.chat_id, text)
            self._progress_id = message.message_id
        else:
            try:
                await self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self._progress_id)
            except TelegramError as exc:
                log.info("progress edit failed (%s): sending a new message", exc)
                message = await self.bot.send_message(self.chat_id, text)
                self._progress_id = message.message_id
        self._shown_text = text

    async def answer(self, text: str, **kwargs: Any) -> None:
        """Send a full answer: split within the limit, formatted as HTML where the server accepts it."""
        await self.flush()
        for chunk in split_message(text or "(empty answer)"):
            try:
                await self.bot.send_message(self.chat_id, to_html(chunk), parse_mode="HTML", **kwargs)
            except BadRequest as exc:
                log.info("HTML chunk refused (%s): sending it as plain text", exc)
                await self.bot.send_message(self.chat_id, chunk, **kwargs)


async def send_text(bot: Bot, chat_id: int, text: str) -> None:
    await ChatWriter(bot, chat_id).answer(text)

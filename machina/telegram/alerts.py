"""Delivering the operator alert spool (machina.alerts, written by machina-autonomic) to the allowed chats.

Every :data:`POLL_S` the spool in ``state/alerts/`` is read oldest first.  ``milestone`` alerts always go
out; ``stream`` alerts only while MACHINA_DEV_EXPLORE is on (routine notices are noise otherwise, and are
dropped).  What is due is sent as one message per chat at most once a minute, to every chat in
TELEGRAM_CHAT_ID (never to "whoever wrote last").  An alert leaves the spool only once every chat has it,
so a Bot API failure or a restart of either daemon loses nothing: the next tick retries.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram.error import TelegramError
from telegram.ext import ContextTypes

from machina import alerts
from machina.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
POLL_S = 5.0
#: At most one alert message per chat per this many seconds.
MIN_INTERVAL_S = 60.0
#: Alerts in one message at most (the rest wait for the next one).
BATCH = 10
_ICON = {alerts.MILESTONE: "🚩", alerts.STREAM: "·"}


class AlertRelay:
    def __init__(self, state_dir: str, chat_ids: frozenset[int], stream: bool, clock: Clock = SYSTEM_CLOCK) -> None:
        self.state_dir = state_dir
        self.chat_ids = chat_ids
        self.stream = stream
        self.clock = clock
        self._last_sent: dict[int, float] = {}
        self._delivered: dict[str, set[int]] = {}  # spool path -> chats that already have it

    async def tick(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        due: list[tuple[str, alerts.Alert]] = []
        for path, alert in alerts.pending(self.state_dir):
            if alert.tier == alerts.STREAM and not self.stream:
                log.debug("stream alert dropped (MACHINA_DEV_EXPLORE is off): %s", alert.text)
                alerts.sent(path)
                continue
            due.append((path, alert))
            if len(due) == BATCH:
                break
        if due:
            await self._deliver(context.bot, due)

    async def _deliver(self, bot: Any, due: list[tuple[str, alerts.Alert]]) -> None:
        now = self.clock.monotonic()
        for chat_id in sorted(self.chat_ids):
            if now - self._last_sent.get(chat_id, float("-inf")) < MIN_INTERVAL_S:
                continue
            batch = [(p, a) for p, a in due if chat_id not in self._delivered.get(p, set())]
            if not batch:
                continue
            text = "\n".join(f"{_ICON[a.tier]} [{a.source or 'machina'}] {a.text}" for _, a in batch)
            try:
                await bot.send_message(chat_id, text[:4000])
            except TelegramError as exc:
                log.warning("alerts not delivered to chat %s (retried in %.0f s): %s", chat_id, POLL_S, exc)
                continue
            self._last_sent[chat_id] = now
            for path, _ in batch:
                self._delivered.setdefault(path, set()).add(chat_id)
        for path, _ in due:
            if self._delivered.get(path, set()) >= self.chat_ids:
                alerts.sent(path)
                self._delivered.pop(path, None)

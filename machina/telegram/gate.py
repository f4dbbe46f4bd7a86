"""The one gate in front of every update: anything from a chat or user not allowed is dropped here.

Registered as a ``TypeHandler(Update)`` in group -1 (python-telegram-bot's pattern), so it runs before every
handler of every update type (messages, commands, edits, button presses) and raises
``ApplicationHandlerStop`` for strangers.  Each (chat, user) pair dropped is logged once (a stranger who
keeps writing cannot fill the journal) and every drop is counted in
``$MACHINA_ROOT/state/metrics/telegram.json`` (``dropped_updates`` per update kind).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)
#: At most this many distinct strangers are remembered for the log-once rule (then logging stops).
MAX_REMEMBERED = 10_000


class Gate:
    def __init__(self, chat_ids: frozenset[int], user_ids: frozenset[int], metrics_path: str) -> None:
        self.chat_ids = chat_ids
        self.user_ids = user_ids
        self.metrics_path = metrics_path
        self.dropped: dict[str, int] = _load_counts(metrics_path)
        self._logged: set[tuple[int | None, int | None]] = set()
        self._lock = threading.Lock()

    def admits(self, chat_id: int | None, user_id: int | None) -> bool:
        """True for a chat in TELEGRAM_CHAT_ID and (when TELEGRAM_ALLOWED_USER_IDS is set) a user in it."""
        if chat_id is None or chat_id not in self.chat_ids:
            return False
        return not self.user_ids or (user_id is not None and user_id in self.user_ids)

    async def check(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The group -1 handler: lets allowed updates through, stops the rest."""
        if not isinstance(update, Update):
            raise ApplicationHandlerStop
        chat = update.effective_chat
        user = update.effective_user
        chat_id = chat.id if chat else None
        user_id = user.id if user else None
        if self.admits(chat_id, user_id):
            return
        self.drop(_kind(update), chat_id, user_id)
        raise ApplicationHandlerStop

    def drop(self, kind: str, chat_id: int | None, user_id: int | None) -> None:
        with self._lock:
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            first = (chat_id, user_id) not in self._logged and len(self._logged) < MAX_REMEMBERED
            if first:
                self._logged.add((chat_id, user_id))
            self._save()
        if first:
            log.warning(
                "dropped a %s from chat %s user %s: not in TELEGRAM_CHAT_ID/TELEGRAM_ALLOWED_USER_IDS "
                "(logged once per chat and user)",
                kind,
                chat_id,
                user_id,
            )

    def total_dropped(self) -> int:
        with self._lock:
            return sum(self.dropped.values())

    def _save(self) -> None:
        try:
            ensure_dir(os.path.dirname(self.metrics_path))
            body = json.dumps({"dropped_updates": self.dropped}, sort_keys=True).encode()
            write_atomic(self.metrics_path, body, fsync=False)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.metrics_path, exc)


def _kind(update: Update) -> str:
    if update.callback_query is not None:
        return "callback_query"
    if update.edited_message is not None or update.edited_channel_post is not None:
        return "edited_message"
    message = update.message
    if message is not None and message.text and message.text.startswith("/"):
        return "command"
    if message is not None:
        return "message"
    return "other"


def _load_counts(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
    except (OSError, ValueError):
        return {}
    counts = data.get("dropped_updates") if isinstance(data, dict) else None
    if not isinstance(counts, dict):
        return {}
    return {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}

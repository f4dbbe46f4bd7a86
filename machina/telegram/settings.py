"""What machina-telegram needs from the configuration, checked before anything connects."""

from __future__ import annotations

import re
from dataclasses import dataclass

from machina.config import Config, ConfigError

#: The shape @BotFather gives: the bot's numeric id, a colon, a secret of URL-safe characters.
TOKEN_SHAPE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{20,}")

HOW_TO_FIND_CHAT_ID = (
    "TELEGRAM_CHAT_ID is not set: machina-telegram answers only the chats it names and refuses to start "
    "without it. To learn a chat's id, send the bot a message, then open "
    "https://api.telegram.org/bot<TOKEN>/getUpdates in a browser (substitute your token) and read "
    '"chat":{"id":...} of your message; a group id is negative. Set TELEGRAM_CHAT_ID=<id>[,<id>...] and '
    'TELEGRAM_ALLOWED_USER_IDS=<your user id> (the "from":{"id":...} of the same message).'
)


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    api_url: str
    chat_ids: frozenset[int]
    user_ids: frozenset[int]  # empty: anyone in an allowed chat
    admin_ids: frozenset[int]
    approval_timeout_s: int

    @classmethod
    def from_config(cls, cfg: Config) -> TelegramSettings:
        token = cfg["TELEGRAM_BOT_TOKEN"]
        if not token:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token there")
        if not TOKEN_SHAPE.fullmatch(token):
            raise ConfigError("TELEGRAM_BOT_TOKEN=<secret>: expected a bot token (<bot id>:<secret> from @BotFather)")
        chats = frozenset(int(c) for c in cfg["TELEGRAM_CHAT_ID"])
        if not chats:
            raise ConfigError(HOW_TO_FIND_CHAT_ID)
        users = frozenset(int(u) for u in cfg["TELEGRAM_ALLOWED_USER_IDS"])
        admins = frozenset(int(u) for u in cfg["TELEGRAM_ADMIN_USER_IDS"])
        strangers = admins - users if users else frozenset()
        if strangers:
            raise ConfigError(
                f"TELEGRAM_ADMIN_USER_IDS names {sorted(strangers)}, not in TELEGRAM_ALLOWED_USER_IDS: "
                "expected administrators among the allowed users"
            )
        return cls(
            token=token,
            api_url=cfg["MACHINA_TELEGRAM_API_URL"],
            chat_ids=chats,
            user_ids=users,
            admin_ids=admins,
            approval_timeout_s=int(cfg["MACHINA_PERMISSION_TIMEOUT_S"]),
        )

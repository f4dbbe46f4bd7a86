"""machina-telegram's lifecycle: connect and register in ``start`` (before READY=1), poll in ``serve``.

python-telegram-bot runs on an asyncio loop of our own (not ``run_polling``, which would take over signals):
``start`` runs the startup on it (getMe, deleteWebhook, setMyCommands, pending approvals, the first long
poll), ``serve`` keeps it running until the shutdown event, ``close`` stops polling and the application.
A heartbeat job on the same loop gates the watchdog, so a wedged loop stops the pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import ContextTypes

from machina.agent.always import AlwaysRules
from machina.config import Config, ConfigError
from machina.exitcodes import ExitCode, MachinaError
from machina.root import open_root
from machina.telegram.alerts import POLL_S, AlertRelay
from machina.telegram.approvals import ApprovalDesk
from machina.telegram.bot import POLL_TIMEOUT_S, MachinaBot
from machina.telegram.gate import Gate
from machina.telegram.pending import ApprovalStore
from machina.telegram.settings import TelegramSettings

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
#: The loop counts as wedged when its heartbeat is this old.
STALE_AFTER_S = 30.0


class TelegramService:
    name = "machina-telegram"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.settings = TelegramSettings.from_config(cfg)  # fail closed before anything connects
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self.bot: MachinaBot | None = None
        self._beat_at = time.monotonic()
        self._open_approvals = 0

    def start(self) -> None:
        root = open_root(self.cfg)
        state = root.join("state", "telegram")
        fsync = bool(self.cfg["MACHINA_WAL_FSYNC"])
        store = ApprovalStore(os.path.join(state, "approvals"), fsync=fsync)
        rules = AlwaysRules.under(root.state)
        gate = Gate(self.settings.chat_ids, self.settings.user_ids, root.join("state", "metrics", "telegram.json"))
        desk = ApprovalDesk(store, rules, lambda: self._toolhost(), self.settings.approval_timeout_s)
        self.bot = MachinaBot(self.cfg, self.settings, root, desk, gate, rules)
        self.relay = AlertRelay(root.state, self.settings.chat_ids, stream=bool(self.cfg["MACHINA_DEV_EXPLORE"]))
        self.app = self.bot.build()
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._startup(desk))
        except InvalidToken:
            raise ConfigError(
                f"TELEGRAM_BOT_TOKEN was refused by the Bot API at {self.settings.api_url} (Unauthorized): "
                "check the token with @BotFather"
            ) from None
        except (NetworkError, TelegramError) as exc:
            raise MachinaError(
                f"cannot reach the Bot API at {self.settings.api_url}: {exc}", ExitCode.UNAVAILABLE
            ) from None

    def _toolhost(self) -> Any:
        assert self.bot is not None
        return self.bot.toolhost

    async def _startup(self, desk: ApprovalDesk) -> None:
        assert self.bot is not None
        await self.app.initialize()  # getMe: a bad token fails here
        await self.app.bot.delete_webhook(drop_pending_updates=False)
        await self.bot.register_commands(self.app)
        await self.app.start()
        self._open_approvals = await desk.recover(self.app.bot, self.app.job_queue)
        self.app.job_queue.run_repeating(self._beat, interval=HEARTBEAT_S, first=0)
        self.app.job_queue.run_repeating(self.relay.tick, interval=POLL_S, first=0)
        await self.app.updater.start_polling(
            timeout=POLL_TIMEOUT_S, allowed_updates=Update.ALL_TYPES, drop_pending_updates=False
        )
        me = self.app.bot.bot
        log.info(
            "polling %s as @%s for %d chat(s); %d approval(s) still open",
            self.settings.api_url,
            me.username,
            len(self.settings.chat_ids),
            self._open_approvals,
        )

    async def _beat(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        self._beat_at = time.monotonic()

    def serve(self, stop: Any) -> None:
        assert self.loop is not None
        self.loop.run_until_complete(self._until(stop))

    async def _until(self, stop: Any) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)

    def healthy(self) -> bool:
        return time.monotonic() - self._beat_at < STALE_AFTER_S

    def status(self) -> str:
        return f"polling for {len(self.settings.chat_ids)} chat(s); {self._open_approvals} approval(s) open at start"

    def close(self) -> None:
        if self.loop is None:
            return
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self._shutdown())
        self.loop.close()
        self.loop = None

    async def _shutdown(self) -> None:
        if self.bot is not None:
            for session in self.bot.sessions.values():
                session.stop()  # the agent's worker thread ends its turn promptly
                if session.task is not None and not session.task.done():
                    session.task.cancel()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        if self.bot is not None:
            for session in self.bot.sessions.values():
                session.close()
            self.bot.toolhost.close()

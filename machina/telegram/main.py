"""``machina-telegram``: parse, configure, run (the bot is machina.telegram.bot)."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

import click

from machina.cli.common import bootstrap, overrides_from, root_option, run_main
from machina.service import run_service
from machina.telegram.service import TelegramService


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@root_option
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level (Bot API requests included, token redacted).")
def cli(root: str | None, verbose: bool) -> int:
    """Telegram front end: chat with the agent, run the 18 commands, approve tool calls by button.

    Long-polls the Bot API at MACHINA_TELEGRAM_API_URL with TELEGRAM_BOT_TOKEN. Only the chats in
    TELEGRAM_CHAT_ID (and, when set, the users in TELEGRAM_ALLOWED_USER_IDS) are answered; every other
    update is dropped before any handler runs. Tool calls that need approval are posted with Allow once,
    Deny and Always buttons and wait MACHINA_PERMISSION_TIMEOUT_S; pending approvals are kept in
    $MACHINA_ROOT/state/telegram/ and survive a restart. Alerts machina-autonomic spools in
    $MACHINA_ROOT/state/alerts/ go to every allowed chat. Exit 78 without TELEGRAM_CHAT_ID or with a token
    the Bot API refuses, 69 when the Bot API cannot be reached at start.
    """
    # python-telegram-bot 22's opt-in to timedelta durations: no deprecation warning on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    cfg = bootstrap("machina-telegram", overrides_from(root), verbose, daemon=True)  # D2: no secret in environ
    if cfg["MACHINA_LOG_LEVEL"] != "debug" and not verbose:
        # One line per long poll is noise; at debug level they are shown (with the token redacted).
        logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per heartbeat job run otherwise
    return int(run_service(TelegramService(cfg)))


def main() -> NoReturn:
    run_main(cli, "machina-telegram")

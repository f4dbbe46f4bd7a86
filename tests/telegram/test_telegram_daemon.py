"""machina-telegram as a process: fail-closed start, exit codes, the token kept out of logs, machina up."""

from __future__ import annotations

import subprocess
from pathlib import Path

from machina.exitcodes import ExitCode
from machina.testing.telegram_api import FakeTelegram
from machina.up.components import suite
from tests.telegram.telegram_kit import CHAT, USER, bot_env, command, running_bot


def run_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(), env=env, capture_output=True, text=True, timeout=60, check=False)


def test_help_explains_itself_without_any_configuration() -> None:
    result = subprocess.run([*command(), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "TELEGRAM_CHAT_ID" in result.stdout and "--root DIR" in result.stdout


def test_without_a_chat_id_it_refuses_to_start_and_says_how_to_find_one(machina_root: Path, tg: FakeTelegram) -> None:
    result = run_once(bot_env(machina_root, tg, TELEGRAM_CHAT_ID=""))
    assert result.returncode == ExitCode.CONFIG
    assert "TELEGRAM_CHAT_ID is not set" in result.stderr and "getUpdates" in result.stderr
    assert tg.calls == []  # it did not even connect
    assert tg.token not in result.stderr


def test_bad_tokens_are_configuration_errors_without_echoing_the_token(machina_root: Path, tg: FakeTelegram) -> None:
    malformed = run_once(bot_env(machina_root, tg, TELEGRAM_BOT_TOKEN="not a token"))
    assert malformed.returncode == ExitCode.CONFIG and "expected a bot token" in malformed.stderr
    assert "not a token" not in malformed.stderr
    refused_token = "999:" + "x" * 30
    refused = run_once(bot_env(machina_root, tg, TELEGRAM_BOT_TOKEN=refused_token))
    assert refused.returncode == ExitCode.CONFIG, refused.stderr
    assert "refused by the Bot API" in refused.stderr
    assert refused_token not in refused.stderr and refused_token.split(":")[1] not in refused.stderr


def test_an_unreachable_bot_api_is_exit_69(machina_root: Path, tg: FakeTelegram) -> None:
    closed = FakeTelegram().start()
    url = closed.api_url
    closed.close()
    result = run_once(bot_env(machina_root, tg, MACHINA_TELEGRAM_API_URL=url))
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert tg.token not in result.stderr


def test_the_token_never_reaches_the_log_even_with_every_request_logged(machina_root: Path, tg: FakeTelegram) -> None:
    with running_bot(machina_root, tg) as bot:
        tg.user_says(CHAT, USER, "/clear")
        tg.wait_for_message(CHAT, lambda m: "forgotten" in m["text"])
    log = bot.log()
    assert "getUpdates" in log and "/bot<redacted>/" in log  # the request URLs were logged (debug level)...
    assert tg.token not in log and tg.token.split(":")[1] not in log  # ...without the token
    assert bot.proc.returncode == 0


def test_machina_up_runs_the_bot_only_when_a_token_is_set() -> None:
    def names(optional: frozenset[str]) -> list[str]:
        specs = suite(1, "127.0.0.1", 8080, lambda n: f"/run/{n}.sock", locate=lambda e: [e], optional=optional)
        return [s.name for s in specs]

    assert "telegram" not in names(frozenset())
    assert "telegram" in names(frozenset({"telegram"}))

"""Heartbeat alerts from the spool machina-autonomic writes (machina.alerts), delivered to every allowed chat."""

from __future__ import annotations

from pathlib import Path

from machina import alerts
from machina.clock import SystemClock
from machina.testing.telegram_api import FakeTelegram
from tests.telegram.telegram_kit import CHAT, bot_env, running_bot

GROUP = -100123


def post(root: Path, tier: str, text: str) -> str:
    return alerts.post(str(root / "state"), tier, text, source="autonomic", clock=SystemClock(), fsync=False)


def spool(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "state" / "alerts").glob("*.json"))


def test_alerts_spooled_while_the_bot_was_down_reach_every_allowed_chat(machina_root: Path, tg: FakeTelegram) -> None:
    post(machina_root, alerts.MILESTONE, "reward regression: success rate 0.91 -> 0.80, skill rolled back")
    post(machina_root, alerts.STREAM, "burst started")
    env = bot_env(machina_root, tg, TELEGRAM_CHAT_ID=f"{CHAT},{GROUP}")
    with running_bot(machina_root, tg, env):
        for chat in (CHAT, GROUP):
            got = tg.wait_for_message(chat, lambda m: "reward regression" in m["text"])
            assert "burst started" not in got["text"]  # stream alerts only in DEV explore
        tg.wait_for(lambda: spool(machina_root) == [])


def test_a_failed_delivery_is_retried_and_stream_alerts_go_out_in_dev_explore(
    machina_root: Path, tg: FakeTelegram
) -> None:
    tg.fail_next("sendMessage", 502, "Bad Gateway")
    post(machina_root, alerts.STREAM, "level L2 failed")
    with running_bot(machina_root, tg, bot_env(machina_root, tg, MACHINA_DEV_EXPLORE="1")):
        got = tg.wait_for_message(CHAT, lambda m: "level L2 failed" in m["text"])
        tg.wait_for(lambda: spool(machina_root) == [])
    assert len(tg.calls_of("sendMessage")) == 2  # the 502, then the retry
    assert got["text"].startswith("· [autonomic]")


def test_the_spool_survives_while_the_bot_api_refuses(machina_root: Path, tg: FakeTelegram) -> None:
    for _ in range(3):
        tg.fail_next("sendMessage", 502, "Bad Gateway")
    post(machina_root, alerts.MILESTONE, "self-made change rejected by the regression gate")
    with running_bot(machina_root, tg):
        tg.wait_for(lambda: len(tg.calls_of("sendMessage")) >= 1)
        assert len(spool(machina_root)) == 1  # not delivered: still spooled
    with running_bot(machina_root, tg):  # a restart of the bot loses nothing either
        tg.wait_for_message(CHAT, lambda m: "regression gate" in m["text"])
        tg.wait_for(lambda: spool(machina_root) == [])

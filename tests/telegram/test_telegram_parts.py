"""The daemon's parts on their own: settings (fail closed), the gate's rule, the approval store on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from machina.config import ConfigError, load
from machina.exitcodes import ExitCode
from machina.telegram.gate import Gate
from machina.telegram.pending import ALLOWED, PENDING, Approval, ApprovalStore, new_id
from machina.telegram.settings import TelegramSettings
from machina.testing.telegram_api import TEST_TOKEN


def settings(**env: str) -> TelegramSettings:
    base = {"MACHINA_ENV_FILE": "/dev/null", "TELEGRAM_BOT_TOKEN": TEST_TOKEN, "TELEGRAM_CHAT_ID": "42"}
    return TelegramSettings.from_config(load({**base, **env}))


def test_settings_fail_closed() -> None:
    parsed = settings(TELEGRAM_CHAT_ID="-1001, 42", TELEGRAM_ALLOWED_USER_IDS="7,8", TELEGRAM_ADMIN_USER_IDS="8")
    assert parsed.chat_ids == {-1001, 42} and parsed.user_ids == {7, 8} and parsed.admin_ids == {8}
    assert parsed.api_url == "https://api.telegram.org/bot" and parsed.approval_timeout_s == 180
    for env, words in [
        ({"TELEGRAM_CHAT_ID": ""}, "To learn a chat's id"),
        ({"TELEGRAM_BOT_TOKEN": ""}, "@BotFather"),
        ({"TELEGRAM_BOT_TOKEN": "12345"}, "expected a bot token"),
        ({"TELEGRAM_ALLOWED_USER_IDS": "7", "TELEGRAM_ADMIN_USER_IDS": "9"}, "not in TELEGRAM_ALLOWED_USER_IDS"),
    ]:
        with pytest.raises(ConfigError) as caught:
            settings(**env)
        assert words in str(caught.value)
        assert caught.value.exit_code == ExitCode.CONFIG
    with pytest.raises(ConfigError, match="a chat id"):
        settings(TELEGRAM_CHAT_ID="everyone")
    with pytest.raises(ConfigError, match="MACHINA_TELEGRAM_API_URL"):
        settings(MACHINA_TELEGRAM_API_URL="http://user:pw@example.com/bot")


def test_the_gate_admits_only_allowed_chats_and_users(tmp_path: Path) -> None:
    gate = Gate(frozenset({42}), frozenset({7}), str(tmp_path / "m.json"))
    assert gate.admits(42, 7)
    assert not gate.admits(42, 8) and not gate.admits(43, 7) and not gate.admits(None, 7) and not gate.admits(42, None)
    anyone = Gate(frozenset({42}), frozenset(), str(tmp_path / "m.json"))
    assert anyone.admits(42, 8) and not anyone.admits(43, 8)


def _approval(state: str = PENDING, expires_at: float = 2000.0) -> Approval:
    return Approval(new_id(), 42, "AID.X.v1", 2, {"a": 1}, "0" * 64, 1000.0, expires_at, state)


def test_the_store_keeps_approvals_and_skips_what_it_cannot_read(tmp_path: Path) -> None:
    store = ApprovalStore(str(tmp_path / "approvals"), fsync=False)
    kept = _approval()
    store.save(kept)
    (tmp_path / "approvals" / "0123456789ab.json").write_text("{not json")
    (tmp_path / "approvals" / "notes.txt").write_text("ignored")
    assert [a.id for a in store.pending()] == [kept.id]
    assert store.get("../../etc/passwd") is None
    with pytest.raises(ValueError):
        store.path("../x")
    decided = _approval(ALLOWED)
    decided.decided_at = 1000.0
    store.save(decided)
    assert store.prune(now=1000.0 + 86400 + 1) == 1  # decided a day ago: removed; pending: kept
    assert store.get(kept.id) is not None and store.get(decided.id) is None

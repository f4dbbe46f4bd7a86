"""Run the real machina-telegram process against the fake Bot API (machina.testing.telegram_api)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from machina.testing.telegram_api import FakeTelegram

CHAT = 4242
USER = 77
ADMIN = 78
STRANGER_CHAT = 9999
STRANGER = 66


@dataclass
class RunningBot:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def bot_env(root: Path, tg: FakeTelegram, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MACHINA_ENV_FILE": "/dev/null",
        "MACHINA_ROOT": str(root),
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_CHAT_ID": f"{CHAT}",
        "TELEGRAM_ALLOWED_USER_IDS": f"{USER},{ADMIN}",
        "TELEGRAM_ADMIN_USER_IDS": f"{ADMIN}",
        "MACHINA_TELEGRAM_API_URL": tg.api_url,
        "MACHINA_LOG_LEVEL": "debug",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v != ""}


def command() -> list[str]:
    return [sys.executable, "-m", "machina.entrypoints", "machina-telegram"]


@contextmanager
def running_bot(root: Path, tg: FakeTelegram, env: Mapping[str, str] | None = None) -> Iterator[RunningBot]:
    """machina-telegram started as an operator would, ready once it polls; SIGTERM to its group on the way out."""
    log_path = root / f"telegram-test-{len(list(root.glob('telegram-test-*.log')))}.log"
    polls_before = len(tg.calls_of("getUpdates"))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command(),
            env=dict(env or bot_env(root, tg)),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    bot = RunningBot(proc, log_path)
    try:
        tg.wait_for(lambda: len(tg.calls_of("getUpdates")) > polls_before or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, f"machina-telegram exited {proc.returncode}:\n{bot.log()}"
        yield bot
    except BaseException:
        print(f"--- machina-telegram log ({log_path.name}) ---\n{bot.log()}")  # shown by pytest on failure
        raise
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

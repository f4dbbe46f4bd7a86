"""The ``machina-autonomic`` daemon's lifecycle: refuse unsafe settings, restore state, beat, save on stop."""

from __future__ import annotations

import logging
import os
import threading

from machina.autonomic.activity import last_activity
from machina.autonomic.engine import BUILT_LEVELS, Engine, Limits
from machina.autonomic.state import load_state, save_state
from machina.autonomic.timings import timings_for
from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import Config, ConfigError
from machina.root import open_root
from machina.up.pidfiles import pidfile_path, remove_pidfile, write_pidfile

log = logging.getLogger(__name__)


def check_ask_settings(cfg: Config) -> None:
    """Unattended approval is a development convenience only (AGENT.md fault 1)."""
    if cfg["MACHINA_AUTONOMIC_APPROVE_ALL_ASK"] and cfg["MACHINA_PROFILE"] == "prod":
        raise ConfigError(
            "MACHINA_AUTONOMIC_APPROVE_ALL_ASK=1 is refused under MACHINA_PROFILE=prod: "
            "list the low-risk tools in MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS instead"
        )


def build_engine(cfg: Config, clock: Clock = SYSTEM_CLOCK) -> Engine:
    root = cfg.require_root()
    state_dir = os.path.join(root, "state")
    limits = Limits(cfg["MACHINA_AUTONOMIC_LOG_FILE_CAP_BYTES"], cfg["MACHINA_AUTONOMIC_LOG_TOTAL_CAP_BYTES"])
    timings = timings_for(cfg["MACHINA_DEV_EXPLORE"])
    return Engine(root, timings, limits, clock, load_state(state_dir), fsync=cfg["MACHINA_WAL_FSYNC"])


class AutonomicService:
    name = "machina-autonomic"

    def __init__(self, cfg: Config, clock: Clock = SYSTEM_CLOCK) -> None:
        check_ask_settings(cfg)
        self.cfg = cfg
        self.clock = clock
        self.engine = build_engine(cfg, clock)
        self.pidfile = pidfile_path(open_root(cfg).runtime_dir, "autonomic")
        self._last_beat = clock.monotonic()

    def start(self) -> None:
        if not self.engine.state.started_at:
            self.engine.state.started_at = self.clock.time()
        os.makedirs(os.path.dirname(self.pidfile), exist_ok=True)
        write_pidfile(self.pidfile, os.getpid())

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.beat()
            stop.wait(self.engine.timings.heartbeat_s)

    def beat(self) -> None:
        state_dir = self.engine.state_dir
        self.engine.state.last_user_activity = max(self.engine.state.last_user_activity, last_activity(state_dir))
        self.engine.heartbeat()
        self._last_beat = self.clock.monotonic()

    def healthy(self) -> bool:
        return self.clock.monotonic() - self._last_beat < 3 * self.engine.timings.heartbeat_s + 60

    def status(self) -> str:
        return f"{self.engine.timings.mode} timings; levels built: {', '.join(BUILT_LEVELS)}"

    def close(self) -> None:
        try:
            save_state(self.engine.state_dir, self.engine.state)
        finally:
            remove_pidfile(self.pidfile)

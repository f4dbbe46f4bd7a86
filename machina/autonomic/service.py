"""The ``machina-autonomic`` daemon's lifecycle: refuse unsafe settings, restore state, beat, save on stop."""

from __future__ import annotations

import logging
import os
import threading

from machina.autonomic.activity import last_activity
from machina.autonomic.engine import Engine, Evolution, Limits, Means
from machina.autonomic.state import load_state, save_state
from machina.autonomic.timings import LEVELS, timings_for
from machina.autonomic.toolcalls import ToolUse
from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import Config, ConfigError
from machina.llm.backend import open_backend
from machina.queue import open_queue
from machina.root import open_root
from machina.toolhost.client import ToolhostClient
from machina.up.pidfiles import pidfile_path, remove_pidfile, write_pidfile

log = logging.getLogger(__name__)


def build_means(cfg: Config, clock: Clock) -> Means:
    """The queue (its public interface), the toolhost and the model (when one is configured)."""
    machina_root = open_root(cfg)
    client = ToolhostClient(machina_root.socket_path("toolhost"), timeout=cfg["MACHINA_TOOLHOST_TIMEOUT"])
    memory_dir = os.path.join(machina_root.path, "memory")
    try:
        model = open_backend(cfg, clock=clock)
    except ConfigError as exc:  # no model configured: the levels that think do not run, the others do
        log.info("autonomic: no model (%s); L3, L5 and self-questions will not run", exc)
        model = None
    return Means(
        queue=open_queue(cfg, clock),
        tools=ToolUse(client, memory_dir, clock, fsync=cfg["MACHINA_WAL_FSYNC"]),
        catalog=client.list_tools,
        model=model,
    )


def build_engine(cfg: Config, clock: Clock = SYSTEM_CLOCK, *, means: Means | None = None) -> Engine:
    root = cfg.require_root()
    state_dir = os.path.join(root, "state")
    limits = Limits(cfg["MACHINA_AUTONOMIC_LOG_FILE_CAP_BYTES"], cfg["MACHINA_AUTONOMIC_LOG_TOTAL_CAP_BYTES"])
    timings = timings_for(cfg["MACHINA_DEV_EXPLORE"])
    means = means if means is not None else build_means(cfg, clock)
    evolution = Evolution(
        cfg["MACHINA_SELF_EVOLVE"],
        tuple(cfg["MACHINA_REGRESSION_CMD"] or ()),
        cfg["MACHINA_REGRESSION_TIMEOUT_S"],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
    )
    state = load_state(state_dir)
    fsync = cfg["MACHINA_WAL_FSYNC"]
    return Engine(root, timings, limits, clock, state, fsync=fsync, means=means, evolution=evolution)


class AutonomicService:
    name = "machina-autonomic"

    def __init__(self, cfg: Config, clock: Clock = SYSTEM_CLOCK) -> None:
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
        ready = [level for level in LEVELS if self.engine.available(level)]
        return f"{self.engine.timings.mode} timings; levels that can run: {', '.join(ready)}"

    def close(self) -> None:
        try:
            save_state(self.engine.state_dir, self.engine.state)
        finally:
            remove_pidfile(self.pidfile)

"""``state/autonomic_state.json``: when each level last ran and what it did, kept across restarts.

Written atomically (temporary file, fsync, rename, directory fsync) on every heartbeat and on SIGTERM /
SIGINT, so a kill -9 at any instant leaves either the previous state or the new one.  A file that does
not parse is set aside as ``.corrupt`` and the engine starts from a fresh state (it only loses timers).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)
STATE_FILE = "autonomic_state.json"


@dataclass
class LevelRecord:
    last_run: float = 0.0
    runs: int = 0
    last_outcome: str = ""


@dataclass
class AutonomicState:
    levels: dict[str, LevelRecord] = field(default_factory=dict)
    started_at: float = 0.0
    heartbeats: int = 0
    last_user_activity: float = 0.0
    rollbacks: int = 0
    alerts: int = 0
    # L2 Test: probes enqueued and not yet collected (job name -> probe info), batches, perfect streak
    pending_probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_batches: int = 0
    l2_perfect_streak: int = 0
    # L3 Heal: failures already looked at (bounded)
    healed: list[str] = field(default_factory=list)
    # L5 Curiosity: today's count, when "today" began, the last one
    curiosity_day_start: float = 0.0
    curiosity_today: int = 0
    curiosity_last: float = 0.0
    # L6 Web: queries waiting, and when each query was last asked (24 h dedup)
    web_queue: list[str] = field(default_factory=list)
    web_seen: dict[str, float] = field(default_factory=dict)
    # self-questioning: recent question keys, failures in a row, earliest next question
    sq_recent: dict[str, float] = field(default_factory=dict)
    sq_failures: int = 0
    sq_next_allowed: float = 0.0
    # burst mode
    burst_active: bool = False
    burst_started_at: float = 0.0
    burst_ended_at: float = 0.0
    burst_stalled: int = 0
    burst_self_questions: int = 0
    burst_stimuli: int = 0
    bursts: int = 0
    burst_exits: dict[str, int] = field(default_factory=dict)

    def level(self, name: str) -> LevelRecord:
        return self.levels.setdefault(name, LevelRecord())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AutonomicState:
        levels = {k: LevelRecord(**v) for k, v in (doc.get("levels") or {}).items()}
        rest = {k: v for k, v in doc.items() if k != "levels" and k in cls.__dataclass_fields__}
        return cls(levels=levels, **rest)


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_FILE)


def load_state(state_dir: str) -> AutonomicState:
    path = state_path(state_dir)
    try:
        with open(path, encoding="utf-8") as handle:
            return AutonomicState.from_json(json.load(handle))
    except FileNotFoundError:
        return AutonomicState()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        aside = path + ".corrupt"
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        log.warning("%s is unreadable (%s); set aside as %s, starting from a fresh state", path, exc, aside)
        return AutonomicState()


def save_state(state_dir: str, state: AutonomicState) -> None:
    ensure_dir(state_dir)
    data = json.dumps(state.to_json(), sort_keys=True, indent=1).encode() + b"\n"
    write_atomic(state_path(state_dir), data, fsync=True)

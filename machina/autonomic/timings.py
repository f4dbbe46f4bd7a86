"""Every timing of the autonomic engine, named, per mode (AGENT.md section 5; OPERATIONS.md "Autonomous
Modes").  Normal timings apply unless ``MACHINA_DEV_EXPLORE=1`` selects the DEV explore ones."""

from __future__ import annotations

from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0

LEVELS = ("L1", "L2", "L3", "L4", "L5", "L6")
LEVEL_NAMES = {"L1": "reflect", "L2": "test", "L3": "heal", "L4": "hygiene", "L5": "curiosity", "L6": "web"}
#: What else ``machina autonomic run`` can run once: the actions that are not levels.
ACTION_NAMES = {"SQ": "self-question", "RS": "random stimulus", "EV": "self-evolution"}
RUNNABLE = (*LEVELS, *ACTION_NAMES)


@dataclass(frozen=True)
class Timings:
    mode: str
    interval_s: dict[str, float]  # a level runs at most once per interval
    min_idle_s: dict[str, float]  # ... and only after the user has been idle this long
    curiosity_per_day: int
    curiosity_cooldown_s: float
    burst_after_idle_s: float
    burst_max_s: float
    heartbeat_s: float
    evolve_interval_s: float  # self-evolution (MACHINA_SELF_EVOLVE=1), outside bursts, after min_idle_s["L5"]


NORMAL = Timings(
    mode="normal",
    interval_s={
        "L1": 5 * MINUTE,
        "L2": 10 * MINUTE,
        "L3": 30 * MINUTE,
        "L4": 30 * MINUTE,
        "L5": 30 * MINUTE,
        "L6": HOUR,
    },
    min_idle_s={"L1": 0.0, "L2": 0.0, "L3": 0.0, "L4": 0.0, "L5": 0.0, "L6": 0.0},
    curiosity_per_day=3,
    curiosity_cooldown_s=2 * HOUR,
    burst_after_idle_s=2 * HOUR,
    burst_max_s=30 * MINUTE,
    heartbeat_s=30.0,
    evolve_interval_s=6 * HOUR,
)

DEV_EXPLORE = Timings(
    mode="dev_explore",
    interval_s={"L1": MINUTE, "L2": 2 * MINUTE, "L3": 3 * MINUTE, "L4": 30 * MINUTE, "L5": 0.0, "L6": 15 * MINUTE},
    min_idle_s={"L1": 0.0, "L2": 0.0, "L3": 0.0, "L4": 0.0, "L5": 3 * MINUTE, "L6": 0.0},
    curiosity_per_day=20,
    curiosity_cooldown_s=10 * MINUTE,
    burst_after_idle_s=3 * MINUTE,
    burst_max_s=HOUR,
    heartbeat_s=10.0,
    evolve_interval_s=30 * MINUTE,
)


def timings_for(dev_explore: bool) -> Timings:
    return DEV_EXPLORE if dev_explore else NORMAL

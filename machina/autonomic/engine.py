"""The heartbeat: run the levels that are due, record what each did, save the state.

Built here: L1 Reflect and L4 Hygiene (reward check with per-artifact rollback, trust pruning, graph
compaction, log caps).
L2 Test, L3 Heal, L5 Curiosity and L6 Web need the agent core's tool use and are **not built yet**: they
are never reported as run, and ``machina autonomic run L2`` says so (exit 69).

Everything the engine writes goes through the memory module (locked, durable appends); it never touches
the queue's files (work for the suite goes through ``machina enqueue``, AGENT.md fault 13).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from machina.autonomic import logcaps, reflect, reward, trust
from machina.autonomic.state import AutonomicState, save_state
from machina.autonomic.timings import LEVEL_NAMES, LEVELS, Timings
from machina.clock import Clock
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, write_atomic
from machina.memory import graph
from machina.memory.streams import append, archive_path, locked, read_lines, stream_path

log = logging.getLogger(__name__)
BUILT_LEVELS = ("L1", "L4")
AUDIT_STREAM = "autonomic_audit"


class LevelNotBuilt(MachinaError):
    exit_code = ExitCode.UNAVAILABLE


@dataclass(frozen=True)
class Limits:
    log_file_cap: int
    log_total_cap: int


@dataclass(frozen=True)
class Outcome:
    level: str
    ok: bool
    summary: str
    detail: dict[str, Any]


class Engine:
    def __init__(
        self, root: str, timings: Timings, limits: Limits, clock: Clock, state: AutonomicState, *, fsync: bool
    ) -> None:
        self.root = root
        self.memory = os.path.join(root, "memory")
        self.state_dir = os.path.join(root, "state")
        self.timings = timings
        self.limits = limits
        self.clock = clock
        self.state = state
        self.fsync = fsync
        self._levels: dict[str, Callable[[], Outcome]] = {"L1": self.level_reflect, "L4": self.level_hygiene}

    # --- scheduling ---------------------------------------------------------------------------------------

    def idle_seconds(self) -> float:
        last = self.state.last_user_activity or self.state.started_at
        return max(0.0, self.clock.time() - last)

    def due(self) -> list[str]:
        """Built levels whose interval has passed and whose idle requirement is met, in level order."""
        now, idle = self.clock.time(), self.idle_seconds()
        due = []
        for level in LEVELS:
            if level not in self._levels:
                continue
            record = self.state.level(level)
            if now - record.last_run >= self.timings.interval_s[level] and idle >= self.timings.min_idle_s[level]:
                due.append(level)
        return due

    def heartbeat(self) -> list[Outcome]:
        self.state.heartbeats += 1
        outcomes = [self.run_level(level) for level in self.due()]
        save_state(self.state_dir, self.state)
        return outcomes

    # --- running a level ------------------------------------------------------------------------------------

    def run_level(self, level: str) -> Outcome:
        if level not in LEVELS:
            raise MachinaError(f"unknown level {level!r}: one of {', '.join(LEVELS)}", ExitCode.USAGE)
        run = self._levels.get(level)
        if run is None:
            raise LevelNotBuilt(f"{level} ({LEVEL_NAMES[level]}) is not built yet: it needs the agent core")
        try:
            outcome = run()
        except (OSError, MachinaError) as exc:
            outcome = Outcome(level, False, f"failed: {exc}", {})
        record = self.state.level(level)
        record.last_run, record.runs, record.last_outcome = self.clock.time(), record.runs + 1, outcome.summary
        self.audit(outcome)
        log.info("autonomic %s (%s): %s", level, LEVEL_NAMES[level], outcome.summary)
        return outcome

    def audit(self, outcome: Outcome) -> None:
        record = {"level": outcome.level, "ok": outcome.ok, "summary": outcome.summary, "detail": outcome.detail}
        append(self.memory, AUDIT_STREAM, record, fsync=self.fsync, clock=self.clock)

    # --- L1 Reflect ---------------------------------------------------------------------------------------

    def level_reflect(self) -> Outcome:
        result = reflect.reflect(self.memory, self.clock, fsync=self.fsync)
        return Outcome("L1", True, result.reason, {"written": result.written})

    # --- L4 Hygiene ---------------------------------------------------------------------------------------

    def level_hygiene(self) -> Outcome:
        detail: dict[str, Any] = {}
        check = reward.check_reward(reflect.recent(self.memory, "experiences", 2 * reward.WINDOW))
        detail["reward"] = {"regression": check.regression, "reason": check.reason}
        if check.regression:
            self.state.alerts += 1
            if check.culprit:  # one rollback per hygiene cycle, of the artifact that caused the drop
                detail["rolled_back"] = self.roll_back_skill(check.culprit)
                self.state.rollbacks += int(bool(detail["rolled_back"]))
        pruned = {}
        for stream in trust.PRUNED_STREAMS:
            result = trust.prune(self.memory, stream, self.clock)
            pruned[stream] = result.pruned
        detail["pruned"] = pruned
        detail["graph_compacted"] = graph.compact(self.memory, self.clock)
        halved = logcaps.enforce_caps(self.memory, self.limits.log_file_cap, self.limits.log_total_cap, self.clock)
        detail["halved"] = [os.path.basename(h.path) for h in halved]
        summary = (
            f"reward: {check.reason}; pruned {sum(pruned.values())} low-trust line(s); halved {len(halved)} stream(s)"
        )
        return Outcome("L4", not check.regression, summary, detail)

    def roll_back_skill(self, name: str) -> int:
        """Move the skill's lines to the archive (``skills.jsonl.rolledback``); how many lines moved."""
        path = stream_path(self.memory, "skills")
        if not os.path.exists(path):
            return 0
        day = time.strftime("%Y%m%d", time.gmtime(self.clock.time()))
        target = archive_path(self.memory, "skills.jsonl.rolledback", day)
        with locked(path) as fd:
            mode = os.fstat(fd).st_mode & 0o777
            keep: list[bytes] = []
            moved: list[bytes] = []
            for line in read_lines(path):
                is_it = line.entry is not None and (line.entry.get("record") or {}).get("name") == name
                (moved if is_it else keep).append(line.raw)
            if not moved:
                return 0
            ensure_dir(os.path.dirname(target))
            write_atomic(target, b"".join(moved), fsync=True, mode=mode)  # durable before the skill goes
            write_atomic(path, b"".join(keep), fsync=True, mode=mode)
        log.warning("autonomic: rolled back skill %s (%d line(s) to %s)", json.dumps(name), len(moved), target)
        return len(moved)

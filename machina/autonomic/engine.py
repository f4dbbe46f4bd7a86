"""The heartbeat: run the levels that are due (or one burst turn), record what each did, save the state.

Levels: L1 Reflect and L4 Hygiene (memory only); L2 Test (probes through the queue's public interface);
L3 Heal, L5 Curiosity and self-questioning (the model proposes, the toolhost runs); L6 Web (search through
the toolhost).  A level whose means are missing (no queue, no toolhost, no model configured) is not run and
``machina autonomic run`` says what it needs (exit 69).

Everything the engine writes goes through the memory module (locked, durable appends); it never touches
the queue's files (work for the suite goes through ``machina enqueue``, AGENT.md fault 13).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from machina import alerts
from machina.autonomic import burst, evolve, learning, logcaps, probes, reflect, reward, selfq, stimulus, trust, web
from machina.autonomic.state import AutonomicState, save_state
from machina.autonomic.thinking import Model, NoAnswer, ask_json
from machina.autonomic.timings import ACTION_NAMES, LEVEL_NAMES, LEVELS, Timings
from machina.autonomic.toolcalls import ToolUse
from machina.clock import Clock
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, write_atomic
from machina.memory import graph
from machina.memory.streams import append, archive_path, locked, read_lines, stream_path

log = logging.getLogger(__name__)
BUILT_LEVELS = LEVELS
AUDIT_STREAM = "autonomic_audit"
HEALED_KEPT = 500
RECENT = 200


class LevelNotBuilt(MachinaError):
    """The level cannot run here: what it needs (queue, toolhost, model) is not available."""

    exit_code = ExitCode.UNAVAILABLE


@dataclass
class Means:
    """What the engine acts with; each is optional and the levels needing a missing one do not run."""

    queue: probes.ProbeQueue | None = None
    tools: ToolUse | None = None
    catalog: Callable[[], list[dict[str, Any]]] | None = None  # the toolhost's tool list
    model: Model | None = None

    def missing_for(self, level: str) -> list[str]:
        table: dict[str, dict[str, object]] = {
            "L2": {"queue": self.queue},
            "L3": {"model": self.model, "toolhost": self.tools},
            "L5": {"model": self.model, "toolhost": self.tools},
            "L6": {"toolhost": self.tools},
            burst.SELF_QUESTION: {"model": self.model, "toolhost": self.tools},
            stimulus.NAME: {"toolhost": self.tools, "tool list": self.catalog},
            evolve.NAME: {"model": self.model},
        }
        return [name for name, value in table.get(level, {}).items() if value is None]


@dataclass(frozen=True)
class Evolution:
    """Self-evolution settings: off unless MACHINA_SELF_EVOLVE=1; the gate's command proves each change."""

    enabled: bool = False
    regression_cmd: tuple[str, ...] = ()
    timeout_s: float = 600.0
    env: dict[str, str] | None = None


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
    acted: bool = True  # False: nothing to do (a stalled burst turn)


class Engine:
    def __init__(
        self,
        root: str,
        timings: Timings,
        limits: Limits,
        clock: Clock,
        state: AutonomicState,
        *,
        fsync: bool,
        means: Means | None = None,
        rng: random.Random | None = None,
        evolution: Evolution | None = None,
    ) -> None:
        self.root = root
        self.memory = os.path.join(root, "memory")
        self.state_dir = os.path.join(root, "state")
        self.timings = timings
        self.limits = limits
        self.clock = clock
        self.state = state
        self.fsync = fsync
        self.means = means or Means()
        self.rng = rng or random.Random()  # noqa: S311 - picks a harmless tool, not a secret
        self.evolution = evolution or Evolution()
        self._levels: dict[str, Callable[[], Outcome]] = {
            "L1": self.level_reflect,
            "L2": self.level_test,
            "L3": self.level_heal,
            "L4": self.level_hygiene,
            "L5": self.level_curiosity,
            "L6": self.level_web,
            burst.SELF_QUESTION: self.self_question,
            stimulus.NAME: self.random_stimulus,
            evolve.NAME: self.self_evolve,
        }

    def available(self, level: str) -> bool:
        return not self.means.missing_for(level)

    # --- scheduling ---------------------------------------------------------------------------------------

    def idle_seconds(self) -> float:
        last = self.state.last_user_activity or self.state.started_at
        return max(0.0, self.clock.time() - last)

    def interval(self, level: str) -> float:
        base = self.timings.interval_s[level]
        if level == "L2" and self.state.l2_perfect_streak >= probes.PERFECT_STREAK:
            return base * probes.QUIET_FACTOR  # all is well: test less often
        return base

    def due(self, pace: float = 1.0) -> list[str]:
        """Available levels whose interval (divided by ``pace``) has passed and whose idle need is met."""
        now, idle = self.clock.time(), self.idle_seconds()
        due = []
        for level in LEVELS:
            if not self.available(level):
                continue
            record = self.state.level(level)
            if now - record.last_run >= self.interval(level) / pace and idle >= self.timings.min_idle_s[level]:
                due.append(level)
        return due

    def evolution_due(self) -> bool:
        if not self.evolution.enabled or not self.available(evolve.NAME):
            return False
        last = self.state.level(evolve.NAME).last_run
        now = self.clock.time()
        return now - last >= self.timings.evolve_interval_s and self.idle_seconds() >= self.timings.min_idle_s["L5"]

    def heartbeat(self) -> list[Outcome]:
        self.state.heartbeats += 1
        self.update_burst()
        outcomes = self.burst_turn() if self.state.burst_active else [self.run_level(level) for level in self.due()]
        if not self.state.burst_active and self.evolution_due():
            outcomes.append(self.run_level(evolve.NAME))
        save_state(self.state_dir, self.state)
        return outcomes

    # --- burst mode ----------------------------------------------------------------------------------------

    def update_burst(self) -> None:
        now, idle, state = self.clock.time(), self.idle_seconds(), self.state
        if state.burst_active:
            why = burst.exit_reason(state.burst_started_at, now, idle, state.burst_stalled, self.timings)
            if why:
                state.burst_active, state.burst_ended_at = False, now
                state.burst_exits[why] = state.burst_exits.get(why, 0) + 1
                log.info("autonomic: burst ended (%s) after %.0f s", why, now - state.burst_started_at)
                self.alert(alerts.STREAM, f"burst ended ({why}) after {now - state.burst_started_at:.0f} s")
            return
        quiet = min(idle, now - state.burst_ended_at)  # a new burst needs a new idle spell after the last one
        if burst.should_enter(state.burst_active, quiet, self.timings):
            state.burst_active, state.burst_started_at = True, now
            state.burst_stalled = state.burst_self_questions = state.burst_stimuli = 0
            state.bursts += 1
            log.info("autonomic: burst started after %.0f s idle", idle)
            self.alert(alerts.STREAM, f"burst started after {idle:.0f} s idle")

    def burst_turn(self) -> list[Outcome]:
        state = self.state
        choice = burst.pick(
            self.due(pace=burst.BURST_SPEEDUP), state.burst_self_questions, self.available(burst.SELF_QUESTION)
        )
        if choice is None and state.burst_stimuli < stimulus.MAX_PER_BURST and self.available(stimulus.NAME):
            choice = stimulus.NAME  # nothing due and no self-question left: the last resort
            state.burst_stimuli += 1
        if choice is None:
            state.burst_stalled += 1
            return []
        if choice == burst.SELF_QUESTION:
            state.burst_self_questions += 1
        outcome = self.run_level(choice)
        state.burst_stalled = 0 if outcome.acted else state.burst_stalled + 1
        return [outcome]

    # --- running a level ------------------------------------------------------------------------------------

    def run_level(self, level: str) -> Outcome:
        if level not in self._levels:
            raise MachinaError(f"unknown level {level!r}: one of {', '.join((*LEVELS, *ACTION_NAMES))}", ExitCode.USAGE)
        missing = self.means.missing_for(level)
        if missing:
            name = LEVEL_NAMES.get(level) or ACTION_NAMES[level]
            raise LevelNotBuilt(f"{level} ({name}) cannot run here: it needs {' and '.join(missing)}")
        try:
            outcome = self._levels[level]()
        except (OSError, MachinaError) as exc:
            outcome = Outcome(level, False, f"failed: {exc}", {}, acted=False)
            self.alert(alerts.STREAM, f"{level} failed: {exc}")
        record = self.state.level(level)
        record.last_run, record.runs, record.last_outcome = self.clock.time(), record.runs + 1, outcome.summary
        self.audit(outcome)
        log.info("autonomic %s (%s): %s", level, LEVEL_NAMES.get(level) or ACTION_NAMES[level], outcome.summary)
        return outcome

    def alert(self, tier: str, text: str) -> None:
        """Spool an alert for the operator's front end (``machina.alerts``); milestones are counted."""
        try:
            alerts.post(self.state_dir, tier, text, source="machina-autonomic", clock=self.clock, fsync=self.fsync)
        except OSError as exc:  # an alert is a courtesy: a full disk must not stop the heartbeat
            log.warning("alert not spooled (%s): %s", exc, text)
        if tier == alerts.MILESTONE:
            self.state.alerts += 1

    def audit(self, outcome: Outcome) -> None:
        record = {"level": outcome.level, "ok": outcome.ok, "summary": outcome.summary, "detail": outcome.detail}
        append(self.memory, AUDIT_STREAM, record, fsync=self.fsync, clock=self.clock)

    # --- L1 Reflect ---------------------------------------------------------------------------------------

    def level_reflect(self) -> Outcome:
        result = reflect.reflect(self.memory, self.clock, fsync=self.fsync)
        return Outcome("L1", True, result.reason, {"written": result.written}, acted=result.written)

    # --- L2 Test --------------------------------------------------------------------------------------------

    def level_test(self) -> Outcome:
        assert self.means.queue is not None
        state = self.state
        got = probes.collect(self.means.queue, state.pending_probes, self.memory, self.clock, self.fsync)
        if got.finished and got.batch_done:
            before = state.l2_perfect_streak
            state.l2_perfect_streak = state.l2_perfect_streak + 1 if got.batch_perfect else 0
            self.alert_streak_change(before, state.l2_perfect_streak)
        detail: dict[str, Any] = {
            "collected": got.finished,
            "passed": got.passed,
            "perfect_streak": state.l2_perfect_streak,
        }
        if got.still_pending:
            return Outcome("L2", True, f"{got.still_pending} probe(s) still running", detail, acted=got.finished > 0)
        state.probe_batches += 1
        state.pending_probes.update(probes.enqueue_batch(self.means.queue, self.root, state.probe_batches, self.clock))
        detail["enqueued"] = sorted(state.pending_probes)
        summary = f"collected {got.finished} ({got.passed} passed); enqueued batch {state.probe_batches}"
        return Outcome("L2", True, summary, detail)

    def alert_streak_change(self, before: int, after: int) -> None:
        if before < probes.PERFECT_STREAK <= after:
            self.alert(
                alerts.MILESTONE,
                f"L2: {after} perfect probe batches in a row; testing {probes.QUIET_FACTOR}x less often",
            )
        elif before >= probes.PERFECT_STREAK and after == 0:
            self.alert(alerts.MILESTONE, "L2: a probe failed after a perfect streak; testing at the normal rate again")

    # --- L3 Heal --------------------------------------------------------------------------------------------

    def level_heal(self) -> Outcome:
        assert self.means.tools is not None and self.means.model is not None
        entry = learning.newest_unhealed(reflect.recent(self.memory, "experiences", RECENT), self.state.healed)
        if entry is None:
            return Outcome("L3", True, "no failed request to heal", {}, acted=False)
        self.state.healed = ([*self.state.healed, learning.failure_key(entry)])[-HEALED_KEPT:]
        catalog = self.catalog()
        record = entry.get("record") or {}
        attempt = learning.propose_and_try(
            self.means.model, self.means.tools, learning.HEAL_SYSTEM, learning.heal_prompt(entry, catalog),
            {t["aid"] for t in catalog}, source="heal", request=str(record.get("user_request")),
            memory_dir=self.memory, clock=self.clock, fsync=self.fsync,
        )  # fmt: skip
        return Outcome("L3", attempt.ok, attempt.reason, {"skill": attempt.skill}, acted=attempt.acted)

    # --- L5 Curiosity ---------------------------------------------------------------------------------------

    def level_curiosity(self) -> Outcome:
        assert self.means.tools is not None and self.means.model is not None
        state, now = self.state, self.clock.time()
        if now - state.curiosity_day_start >= learning.DAY:
            state.curiosity_day_start, state.curiosity_today = now, 0
        allowed, why = learning.curiosity_allowed(
            state.curiosity_today, state.curiosity_day_start, state.curiosity_last, now,
            self.timings.curiosity_per_day, self.timings.curiosity_cooldown_s,
        )  # fmt: skip
        if not allowed:
            return Outcome("L5", True, why, {}, acted=False)
        gap = learning.relevant_gap(self.catalog(), reflect.recent(self.memory, "experiences", RECENT))
        if gap is None:
            return Outcome("L5", True, "no relevant capability gap (relevance gate)", {}, acted=False)
        state.curiosity_today += 1
        state.curiosity_last = now
        prompt = json.dumps({"tool": gap["aid"], "inputs_schema": gap.get("inputs_schema", {})})
        attempt = learning.propose_and_try(
            self.means.model, self.means.tools, learning.CURIOSITY_SYSTEM, prompt, {gap["aid"]},
            source="curiosity", request=f"explore {gap['aid']}", memory_dir=self.memory, clock=self.clock,
            fsync=self.fsync,
        )  # fmt: skip
        return Outcome(
            "L5", attempt.ok, attempt.reason, {"tool": gap["aid"], "skill": attempt.skill}, acted=attempt.acted
        )

    # --- L6 Web ---------------------------------------------------------------------------------------------

    def level_web(self) -> Outcome:
        assert self.means.tools is not None
        state = self.state
        web.forget_old(state.web_seen, self.clock.time())
        query = web.next_query(state.web_queue, state.web_seen, self.failed_requests())
        if query is None:
            return Outcome("L6", True, "nothing new to search for", {}, acted=False)
        done = web.search(
            self.means.tools, query, state.web_seen, self.memory, self.clock, self.means.model,
            fsync=self.fsync, reason="autonomic L6",
        )  # fmt: skip
        return Outcome("L6", done.done, done.reason, {"query": query, "results": done.results})

    def failed_requests(self) -> list[str]:
        out = []
        for entry in reflect.recent(self.memory, "experiences", RECENT):
            record = entry.get("record") or {}
            if record.get("success") is False and record.get("source") != "autonomic":
                out.append(str(record.get("user_request") or ""))
        return out

    def catalog(self) -> list[dict[str, Any]]:
        return list(self.means.catalog()) if self.means.catalog is not None else []

    # --- self-questioning -----------------------------------------------------------------------------------

    def self_question(self) -> Outcome:
        assert self.means.tools is not None and self.means.model is not None
        state, now = self.state, self.clock.time()
        if not selfq.ready(state.sq_next_allowed, now):
            return Outcome("SQ", True, f"cooling down ({state.sq_next_allowed - now:.0f} s left)", {}, acted=False)
        catalog = self.catalog()
        summary = selfq.state_summary(
            state.levels,
            reflect.recent(self.memory, "insights", 3),
            self.failed_requests(),
            [t["aid"] for t in catalog],
        )
        try:
            question = selfq.parse(ask_json(self.means.model, selfq.SYSTEM, summary, selfq.SCHEMA))
        except NoAnswer as exc:
            state.sq_failures, state.sq_next_allowed = selfq.after(False, state.sq_failures, now)
            return Outcome("SQ", False, str(exc), {}, acted=False)
        why_not = selfq.noop_reason(question, state.sq_recent, now)
        if why_not:
            return Outcome("SQ", True, f"no-op: {why_not}", {"action": question.action}, acted=False)
        state.sq_recent = {k: t for k, t in state.sq_recent.items() if now - t < selfq.DEDUP_S}
        state.sq_recent[selfq.key(question)] = now
        ok, what = self.carry_out(question, {t["aid"] for t in catalog})
        state.sq_failures, state.sq_next_allowed = selfq.after(ok, state.sq_failures, now)
        return Outcome("SQ", ok, f"{question.action}: {what}", {"action": question.action})

    def carry_out(self, question: selfq.Question, tools: set[str]) -> tuple[bool, str]:
        assert self.means.tools is not None
        if question.action == "reflect":
            return True, reflect.reflect(self.memory, self.clock, fsync=self.fsync).reason
        if question.action == "search":
            done = web.search(
                self.means.tools, question.arg, self.state.web_seen, self.memory, self.clock, self.means.model,
                fsync=self.fsync, reason="self-question",
            )  # fmt: skip
            return done.done, done.reason
        aid, inputs = question.arg.strip(), question.inputs
        if question.action == "code":
            aid, inputs = "AID.CODE.EXEC.v1", {"lang": "python", "code": question.arg}
        if aid not in tools:
            return False, f"{aid[:80]!r} is not a tool the toolhost lists"
        reply = self.means.tools.call(aid, inputs, why=f"self-question {question.action}")
        return reply.ok, f"{aid} -> {reply.status}"

    # --- RandomStimulus ------------------------------------------------------------------------------------

    def random_stimulus(self) -> Outcome:
        assert self.means.tools is not None and self.means.catalog is not None
        tool = stimulus.pick(self.means.catalog(), self.rng)
        if tool is None:
            return Outcome(stimulus.NAME, True, "no tier-0 tool without inputs to poke", {}, acted=False)
        reply = self.means.tools.call(tool["aid"], {}, why="random stimulus")
        return Outcome(stimulus.NAME, reply.ok, f"{tool['aid']} -> {reply.status}", {"aid": tool["aid"]})

    # --- self-evolution ------------------------------------------------------------------------------------

    def self_evolve(self) -> Outcome:
        assert self.means.model is not None
        settings = self.evolution
        if not settings.enabled:
            return Outcome(evolve.NAME, True, "off (MACHINA_SELF_EVOLVE=0)", {}, acted=False)
        context = json.dumps(
            {"insights": reflect.recent(self.memory, "insights", 5), "failures": self.failed_requests()[:5]},
            ensure_ascii=False,
        )
        try:
            proposal = evolve.check(ask_json(self.means.model, evolve.SYSTEM, context, evolve.SCHEMA))
            result = evolve.evolve(
                self.root, proposal, settings.regression_cmd, settings.timeout_s, self.clock,
                fsync=self.fsync, base_env=settings.env,
            )  # fmt: skip
        except (NoAnswer, evolve.Refused) as exc:
            return Outcome(evolve.NAME, False, f"no change: {exc}", {}, acted=False)
        self.alert(alerts.MILESTONE, f"self-evolution: {result.reason}")
        return Outcome(evolve.NAME, result.kept, result.reason, {"path": result.path, "kept": result.kept})

    # --- L4 Hygiene ---------------------------------------------------------------------------------------

    def level_hygiene(self) -> Outcome:
        detail: dict[str, Any] = {}
        check = reward.check_reward(reflect.recent(self.memory, "experiences", 2 * reward.WINDOW))
        detail["reward"] = {"regression": check.regression, "reason": check.reason}
        if check.regression:
            if check.culprit:  # one rollback per hygiene cycle, of the artifact that caused the drop
                detail["rolled_back"] = self.roll_back_skill(check.culprit)
                self.state.rollbacks += int(bool(detail["rolled_back"]))
            undone = f"; skill {check.culprit!r} rolled back" if detail.get("rolled_back") else ""
            self.alert(alerts.MILESTONE, f"reward regression: {check.reason}{undone}")
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

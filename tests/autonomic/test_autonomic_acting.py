"""The levels that act: L2 probes through the real file queue, L3 Heal / L5 Curiosity / self-questions with
the fake LLM server and a real toolhost, L6 web dedup, and burst mode entry and exits on a fake clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.autonomic import burst, probes, selfq, web
from machina.autonomic.engine import Engine, Limits, Means
from machina.autonomic.state import load_state
from machina.autonomic.timings import DEV_EXPLORE, NORMAL, Timings
from machina.autonomic.toolcalls import ToolUse
from machina.clock import FakeClock
from machina.config import load
from machina.llm import open_backend
from machina.memory.streams import append
from machina.queue import open_queue
from machina.testing.fake_llm import FakeLLM
from machina.testing.toolhost import RunningToolhost, running_toolhost

BIG = 1 << 40
START = 1_800_000_000.0


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def engine_for(root: Path, means: Means, timings: Timings = NORMAL, clock: FakeClock | None = None) -> Engine:
    clock = clock or FakeClock(start=START)
    state = load_state(str(root / "state"))
    state.started_at = state.started_at or clock.time()
    return Engine(str(root), timings, Limits(BIG, BIG), clock, state, fsync=False, means=means)


# --- L2 Test through the queue's public interface ---------------------------------------------------------


def finish_jobs(root: Path, status: str) -> int:
    """Do what a worker does with each queued probe (claim, then complete with a run summary)."""
    queue = open_queue(load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root)}))
    done = 0
    try:
        while (claim := queue.claim("test-worker")) is not None:
            queue.complete(claim, {"status": status, "reason": "test"})
            done += 1
    finally:
        queue.close()
    return done


def test_l2_enqueues_probes_collects_their_results_and_goes_quiet_after_three_perfect_batches(
    machina_root: Path,
) -> None:
    clock = FakeClock(start=START)
    queue = open_queue(load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(machina_root)}), clock)
    engine = engine_for(machina_root, Means(queue=queue), clock=clock)
    try:
        assert engine.run_level("L2").detail["enqueued"]
        assert (machina_root / probes.FIXTURE).read_text().count("ERROR") == 2
        for batch in range(3):
            assert finish_jobs(machina_root, "done") == len(probes.PROBES)
            clock.advance(NORMAL.interval_s["L2"])
            outcome = engine.run_level("L2")
            assert outcome.detail["passed"] == len(probes.PROBES)
            assert engine.state.l2_perfect_streak == batch + 1
        assert engine.interval("L2") == NORMAL.interval_s["L2"] * probes.QUIET_FACTOR
        experiences = lines(machina_root / "memory" / "experiences.jsonl")
        assert len(experiences) == 3 * len(probes.PROBES)
        assert {e["record"]["intent_type"] for e in experiences} == {"self_test"}
        # one failing probe ends the streak: L2 runs at its normal rate again
        assert finish_jobs(machina_root, "failed") == len(probes.PROBES)
        engine.run_level("L2")
        assert engine.state.l2_perfect_streak == 0
        assert engine.interval("L2") == NORMAL.interval_s["L2"]
    finally:
        queue.close()


def test_l2_counts_a_probe_without_result_after_its_timeout_as_failed(machina_root: Path) -> None:
    clock = FakeClock(start=START)
    queue = open_queue(load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(machina_root)}), clock)
    engine = engine_for(machina_root, Means(queue=queue), clock=clock)
    try:
        engine.run_level("L2")
        clock.advance(probes.PROBE_TIMEOUT_S)
        outcome = engine.run_level("L2")
        assert outcome.detail["collected"] == len(probes.PROBES) and outcome.detail["passed"] == 0
        previews = [e["record"]["result_preview"] for e in lines(machina_root / "memory" / "experiences.jsonl")]
        assert all("no final result" in p for p in previews)
    finally:
        queue.close()


# --- the model proposes, the toolhost runs ----------------------------------------------------------------


@pytest.fixture
def host(machina_root: Path) -> Iterator[RunningToolhost]:
    (machina_root / "data").mkdir(exist_ok=True)
    (machina_root / "data" / "app.log").write_text("ok\nERROR one\nERROR two\n")
    with running_toolhost(str(machina_root), env={"MACHINA_PERMISSION_MODE": "standard"}) as running:
        yield running


def thinking_means(root: Path, host: RunningToolhost, fake: FakeLLM, clock: FakeClock) -> Means:
    cfg = load(
        {
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_CHAT_BACKEND": "oai_compat",
            "OAI_COMPAT_BASE_URL": fake.base_url,
            "OAI_COMPAT_MODEL": "test-model",
        }
    )
    tools = ToolUse(host.client, str(root / "memory"), clock, fsync=False)
    return Means(tools=tools, catalog=host.client.list_tools, model=open_backend(cfg))


FAILED_SCAN = {
    "user_request": "scan the app log for errors",
    "tool_used": "AID.ERROR_SCAN.v1",
    "success": False,
    "elapsed_sec": 0.1,
    "result_preview": "invalid_input: input_path is required",
}


def test_l3_heals_a_failure_with_a_real_call_and_saves_it_as_a_skill(machina_root: Path, host: RunningToolhost) -> None:
    clock = FakeClock(start=START)
    append(str(machina_root / "memory"), "experiences", FAILED_SCAN, clock=clock)
    fix = {"aid": "AID.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"}, "reason": "x"}
    with FakeLLM([{"json": fix}]) as fake:
        engine = engine_for(machina_root, thinking_means(machina_root, host, fake, clock), clock=clock)
        outcome = engine.run_level("L3")
        assert outcome.ok, outcome.summary
        (skill,) = lines(machina_root / "memory" / "skills.jsonl")
        assert json.loads(skill["record"]["code"]) == {"aid": fix["aid"], "inputs": fix["inputs"]}
        assert skill["record"]["source"] == "heal"
        # the same failure is not healed twice
        assert engine.run_level("L3").acted is False


@pytest.mark.parametrize(
    "answer",
    [
        {"garbage": True},
        {"truncate": True, "json": {"aid": "AID.ERROR_SCAN.v1", "inputs": {}}},
        {"json": {"aid": "AID.SHELL.EXEC.v1", "inputs": {"cmd": "rm -rf /"}}},  # a tool it may not pick here
        {"json": {"aid": "AID.ERROR_SCAN.v1", "inputs": "not an object"}},
    ],
    ids=["garbage", "truncated", "hostile_tool", "off_schema"],
)
def test_l3_with_an_unusable_model_answer_runs_nothing_and_saves_nothing(
    machina_root: Path, host: RunningToolhost, answer: dict[str, Any]
) -> None:
    clock = FakeClock(start=START)
    append(str(machina_root / "memory"), "experiences", FAILED_SCAN, clock=clock)
    with FakeLLM([answer]) as fake:
        means = thinking_means(machina_root, host, fake, clock)
        means.catalog = lambda: [t for t in host.client.list_tools() if t["aid"] == "AID.ERROR_SCAN.v1"]
        outcome = engine_for(machina_root, means, clock=clock).run_level("L3")
    assert not outcome.ok and not outcome.acted
    assert not (machina_root / "memory" / "skills.jsonl").exists()
    assert len(lines(machina_root / "memory" / "experiences.jsonl")) == 1  # no tool call was made


def test_l5_curiosity_needs_a_relevant_gap_and_keeps_its_daily_limit(machina_root: Path, host: RunningToolhost) -> None:
    clock = FakeClock(start=START)
    memory = str(machina_root / "memory")
    read = {"aid": "AID.FILE.READ.v1", "inputs": {"path": "data/app.log"}}
    with FakeLLM([{"json": read}] * 5) as fake:
        engine = engine_for(machina_root, thinking_means(machina_root, host, fake, clock), clock=clock)
        assert engine.run_level("L5").acted is False  # no request of a person mentions a tool: not relevant
        append(memory, "experiences", {**FAILED_SCAN, "user_request": "read the file data/app.log"}, clock=clock)
        outcome = engine.run_level("L5")
        assert outcome.ok and outcome.detail["tool"] == "AID.FILE.READ.v1", outcome.summary
        clock.advance(60)
        assert "cooling down" in engine.run_level("L5").summary
        engine.state.curiosity_today = NORMAL.curiosity_per_day
        clock.advance(NORMAL.curiosity_cooldown_s)
        assert "limit reached" in engine.run_level("L5").summary


def test_a_self_question_is_carried_out_through_the_toolhost_then_deduplicated_and_cooled_down(
    machina_root: Path, host: RunningToolhost
) -> None:
    clock = FakeClock(start=START)
    ask = {"action": "test_tool", "arg": "AID.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log", "pattern": "E"}}
    with FakeLLM([{"json": ask}, {"json": ask}, {"garbage": True}]) as fake:
        engine = engine_for(machina_root, thinking_means(machina_root, host, fake, clock), clock=clock)
        first = engine.run_level("SQ")
        assert first.ok and first.acted, first.summary
        assert "cooling down" in engine.run_level("SQ").summary
        clock.advance(selfq.COOLDOWN_S)
        second = engine.run_level("SQ")
        assert not second.acted and "no-op: the same test_tool" in second.summary
        clock.advance(selfq.COOLDOWN_S)
        third = engine.run_level("SQ")
        assert not third.ok and engine.state.sq_failures == 1
        assert engine.state.sq_next_allowed == clock.time() + 2 * selfq.COOLDOWN_S  # backoff doubled
    calls = [e["record"] for e in lines(machina_root / "memory" / "experiences.jsonl")]
    assert [c["tool_used"] for c in calls] == ["AID.ERROR_SCAN.v1"]


def test_a_self_question_naming_an_unlisted_tool_runs_nothing(machina_root: Path, host: RunningToolhost) -> None:
    clock = FakeClock(start=START)
    with FakeLLM([{"json": {"action": "test_tool", "arg": "AID.NOT.A.TOOL.v1", "inputs": {}}}]) as fake:
        outcome = engine_for(machina_root, thinking_means(machina_root, host, fake, clock), clock=clock).run_level("SQ")
    assert not outcome.ok and "not a tool the toolhost lists" in outcome.summary
    assert not (machina_root / "memory" / "experiences.jsonl").exists()


def test_web_queries_are_deduplicated_for_24_hours() -> None:
    seen: dict[str, float] = {}
    queue = ["What is SearXNG", "what is   searxng", "new question"]
    first = web.next_query(queue, seen, [])
    seen[web.query_key(first or "")] = START
    assert first == "What is SearXNG"
    assert web.next_query(queue, seen, []) == "new question"  # the respelled duplicate was dropped
    assert web.next_query([], seen, ["What is SearXNG"]) is None
    web.forget_old(seen, START + web.QUERY_DEDUP_S)
    assert web.next_query([], seen, ["What is SearXNG"]) == "What is SearXNG"


def test_web_results_of_any_common_shape_are_read_and_capped() -> None:
    rows = [{"title": "t", "url": "https://example.org", "content": "c" * 5000}] * 9
    got = web.extract_results({"results": rows})
    assert len(got) == web.MAX_RESULTS and len(got[0]["snippet"]) == 600
    assert web.extract_results({"results": "garbage"}) == [] and web.extract_results({}) == []


# --- burst mode -------------------------------------------------------------------------------------------


def test_burst_starts_after_the_idle_spell_and_ends_on_its_time_limit(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    clock = FakeClock(start=START)
    engine = engine_for(tmp_path, Means(), DEV_EXPLORE, clock)
    engine.state.last_user_activity = clock.time()
    clock.advance(DEV_EXPLORE.burst_after_idle_s - 1)
    engine.heartbeat()
    assert not engine.state.burst_active
    clock.advance(1)
    engine.heartbeat()
    assert engine.state.burst_active and engine.state.bursts == 1
    clock.advance(DEV_EXPLORE.burst_max_s)
    engine.heartbeat()
    assert engine.state.burst_exits.get(burst.EXIT_TIME) == 1 or engine.state.burst_exits.get(burst.EXIT_STALLED)


def test_burst_ends_on_user_activity_and_after_five_stalled_turns(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    clock = FakeClock(start=START)
    engine = engine_for(tmp_path, Means(), NORMAL, clock)
    engine.state.last_user_activity = clock.time()
    clock.advance(NORMAL.burst_after_idle_s)
    engine.heartbeat()  # enters; L1 and L4 are due: the turn runs L1 (priority) with nothing to reflect on
    assert engine.state.burst_active
    for _ in range(burst.MAX_STALLED_TURNS):
        clock.advance(1)
        engine.heartbeat()
    clock.advance(1)
    engine.heartbeat()
    assert not engine.state.burst_active and engine.state.burst_exits == {burst.EXIT_STALLED: 1}
    clock.advance(engine.state.burst_ended_at + NORMAL.burst_after_idle_s - 1 - clock.time())
    engine.heartbeat()
    assert not engine.state.burst_active  # a new burst waits for a new idle spell
    clock.advance(1)
    engine.heartbeat()
    assert engine.state.burst_active
    engine.state.last_user_activity = clock.time() - 5  # the user typed 5 s ago
    engine.heartbeat()
    assert not engine.state.burst_active and engine.state.burst_exits[burst.EXIT_USER] == 1


def test_a_burst_turn_runs_the_highest_priority_due_level_then_self_questions_up_to_three() -> None:
    assert burst.pick(["L1", "L5", "L6", "L3", "L2"], 0, True) == "L2"
    assert burst.pick(["L1", "L5", "L6"], 0, True) == "L6"
    assert burst.pick(["L1", "L5"], 0, True) == "L5"
    assert burst.pick([], 2, True) == burst.SELF_QUESTION
    assert burst.pick([], burst.MAX_SELF_QUESTIONS, True) is None
    assert burst.pick([], 0, False) is None


def test_an_ask_tool_never_runs_unattended_by_default(machina_root: Path, host: RunningToolhost) -> None:
    """A self-question naming a tool that asks for approval gets approval_required: nobody says yes for it."""
    clock = FakeClock(start=START)
    tier = {t["aid"]: t["tier"] for t in host.client.list_tools()}["AID.SHELL.EXEC.v1"]
    assert tier >= 2  # "ask" under MACHINA_PERMISSION_MODE=standard
    ask = {"action": "test_tool", "arg": "AID.SHELL.EXEC.v1", "inputs": {"cmd": ["touch", "/tmp/pwned"]}}
    with FakeLLM([{"json": ask}]) as fake:
        outcome = engine_for(machina_root, thinking_means(machina_root, host, fake, clock), clock=clock).run_level("SQ")
    assert not outcome.ok and "approval_required" in outcome.summary, outcome.summary
    (call,) = [e["record"] for e in lines(machina_root / "memory" / "experiences.jsonl")]
    assert call["success"] is False and "needs a lease" in call["result_preview"]

"""The autonomic engine on a fake clock: level timings per profile, L1 Reflect with insight dedup, L4 Hygiene
(reward rollback of the right artifact, trust pruning into the archive, log caps), state across restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from machina.autonomic import reward, trust
from machina.autonomic.engine import Engine, LevelNotBuilt, Limits
from machina.autonomic.logcaps import enforce_caps
from machina.autonomic.state import AutonomicState, load_state, save_state
from machina.autonomic.timings import DEV_EXPLORE, NORMAL, Timings
from machina.clock import FakeClock
from machina.memory.streams import append

BIG = 1 << 40
DAY = 86400.0


def experience(tool: str, ok: bool, **extra: object) -> dict[str, object]:
    return {"user_request": "r", "tool_used": tool, "success": ok, "elapsed_sec": 0.1, **extra}


def make_engine(root: Path, timings: Timings = NORMAL, clock: FakeClock | None = None, **limits: int) -> Engine:
    clock = clock or FakeClock(start=1_800_000_000.0)
    (root / "memory").mkdir(exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    caps = Limits(limits.get("file_cap", BIG), limits.get("total_cap", BIG))
    state = load_state(str(root / "state"))
    state.started_at = state.started_at or clock.time()
    return Engine(str(root), timings, caps, clock, state, fsync=False)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("timings", [NORMAL, DEV_EXPLORE], ids=["normal", "dev_explore"])
def test_each_built_level_fires_at_its_interval_and_not_before(tmp_path: Path, timings: Timings) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    engine = make_engine(tmp_path, timings, clock)
    assert engine.due() == ["L1", "L4"]  # never run: due at once
    engine.heartbeat()
    assert engine.due() == []
    clock.advance(timings.interval_s["L1"] - 1)
    assert engine.due() == []
    clock.advance(1)
    assert engine.due() == (["L1", "L4"] if timings.interval_s["L4"] == timings.interval_s["L1"] else ["L1"])
    engine.heartbeat()
    clock.advance(timings.interval_s["L4"] - timings.interval_s["L1"])
    assert "L4" in engine.due()


def test_dev_explore_timings_are_the_documented_ones() -> None:
    assert DEV_EXPLORE.interval_s["L1"] == 60 and DEV_EXPLORE.interval_s["L2"] == 120
    assert DEV_EXPLORE.interval_s["L3"] == 180 and DEV_EXPLORE.min_idle_s["L5"] == 180
    assert DEV_EXPLORE.curiosity_per_day == 20 and DEV_EXPLORE.curiosity_cooldown_s == 600
    assert NORMAL.curiosity_per_day == 3 and NORMAL.curiosity_cooldown_s == 7200
    assert NORMAL.burst_after_idle_s == 7200 and DEV_EXPLORE.burst_after_idle_s == 180
    assert NORMAL.burst_max_s == 1800 and DEV_EXPLORE.burst_max_s == 3600


def test_levels_without_their_means_say_what_they_need_and_never_count_as_run(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    needs = {"L2": "queue", "L3": "model and toolhost", "L5": "model and toolhost", "L6": "toolhost"}
    for level, need in needs.items():
        with pytest.raises(LevelNotBuilt, match=f"cannot run here: it needs {need}"):
            engine.run_level(level)
        assert engine.state.level(level).runs == 0
    assert engine.due() == ["L1", "L4"]


def test_l1_writes_a_tool_stats_insight_and_dedups_it(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    engine = make_engine(tmp_path, clock=clock)
    memory = str(tmp_path / "memory")
    for i in range(10):
        append(memory, "experiences", experience("AID.ERROR_SCAN.v1", True), clock=clock)
        append(memory, "experiences", experience("AID.SHELL.EXEC.v1", i < 3), clock=clock)
    outcome = engine.run_level("L1")
    assert outcome.ok and outcome.detail == {"written": True}
    (insight,) = lines(tmp_path / "memory" / "insights.jsonl")
    record = insight["record"]
    assert isinstance(record, dict) and record["type"] == "tool_stats"
    assert record["tool_stats"]["AID.SHELL.EXEC.v1"] == {
        "runs": 10,
        "ok": 3,
        "success_rate": 0.3,
        "avg_elapsed_sec": 0.1,
    }
    assert record["rules"] == [
        "AID.ERROR_SCAN.v1 is reliable (10/10 succeeded)",
        "AID.SHELL.EXEC.v1 often fails (3/10 succeeded): check its inputs first",
    ]
    clock.advance(299)
    assert "less than 300 s" in engine.run_level("L1").summary  # proximity
    clock.advance(2)
    assert engine.run_level("L1").summary == "the same rules are already among the last insights"
    append(memory, "experiences", experience("AID.FILE.READ.v1", True), clock=clock)
    for _ in range(4):
        append(memory, "experiences", experience("AID.FILE.READ.v1", True), clock=clock)
    assert engine.run_level("L1").detail == {"written": True}  # a new rule is a new lesson
    assert len(lines(tmp_path / "memory" / "insights.jsonl")) == 2
    audit = lines(tmp_path / "memory" / "autonomic_audit.jsonl")
    assert [a["record"]["level"] for a in audit] == ["L1"] * 4  # type: ignore[index]


def test_reward_drop_rolls_back_the_skill_that_caused_it_not_the_newest(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    engine = make_engine(tmp_path, clock=clock)
    memory = str(tmp_path / "memory")
    code = "print(1)"
    for name in ("good_skill", "bad_skill", "newest_skill"):
        append(memory, "skills", {"name": name, "lang": "python", "code": code, "code_hash": "0" * 64}, clock=clock)
    for i in range(100):  # the window before: everything works
        append(
            memory, "experiences", experience("AID.UTIL.RUN.v1", True, artifact="good_skill" if i % 2 else "bad_skill")
        )
    for i in range(100):  # now bad_skill fails; newest_skill, used a little, works
        artifact = ["good_skill", "bad_skill", "newest_skill"][i % 3]
        append(memory, "experiences", experience("AID.UTIL.RUN.v1", artifact != "bad_skill", artifact=artifact))
    outcome = engine.run_level("L4")
    assert not outcome.ok and outcome.detail["rolled_back"] == 1
    assert "worst artifact bad_skill" in outcome.detail["reward"]["reason"]
    kept = [s["record"]["name"] for s in lines(tmp_path / "memory" / "skills.jsonl")]  # type: ignore[index]
    assert kept == ["good_skill", "newest_skill"]
    (archived,) = list((tmp_path / "memory" / "archive").glob("*/skills.jsonl.rolledback"))
    assert "bad_skill" in archived.read_text()
    assert engine.state.alerts == 1 and engine.state.rollbacks == 1


def test_no_drop_no_alert() -> None:
    window = [{"record": experience("T", True)} for _ in range(200)]
    assert not reward.check_reward(window).regression
    assert "two windows need 200" in reward.check_reward(window[:150]).reason


def test_trust_formula_and_pruning_into_the_archive(tmp_path: Path) -> None:
    assert trust.trust(0, True) == 1.0 and trust.trust(7 * DAY, True) == pytest.approx(0.5)
    assert trust.trust(0, False) == pytest.approx(0.3)
    clock = FakeClock(start=1_800_000_000.0)
    memory = str(tmp_path / "memory")
    os.makedirs(memory)
    append(memory, "experiences", experience("T", False), clock=clock)  # 0.3 -> below 0.1 after ~11 days
    append(memory, "experiences", experience("T", True), clock=clock)  # 1.0 -> below 0.1 after ~23 days
    clock.advance(12 * DAY)
    append(memory, "experiences", experience("T", True), clock=clock)
    result = trust.prune(memory, "experiences", clock)
    assert (result.kept, result.pruned) == (2, 1)
    archived = lines(Path(result.archived_to))
    assert [a["record"]["success"] for a in archived] == [False]  # type: ignore[index]
    assert len(lines(tmp_path / "memory" / "experiences.jsonl")) == 2
    assert trust.prune(memory, "experiences", clock).pruned == 0


def test_log_caps_halve_by_streaming_and_archive_the_older_half(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    memory = str(tmp_path / "memory")
    os.makedirs(memory)
    for i in range(100):
        append(memory, "notes", text=f"line {i:03d} " + "x" * 50, clock=clock)
    for i in range(10):
        append(memory, "small", text=f"s{i}", clock=clock)
    size = os.path.getsize(os.path.join(memory, "notes.jsonl"))
    (halved,) = enforce_caps(memory, file_cap=size // 2 + 100, total_cap=BIG, clock=clock)
    kept = lines(tmp_path / "memory" / "notes.jsonl")
    older = lines(Path(halved.archived_to))
    assert len(kept) + len(older) == 100 and 45 <= len(kept) <= 55
    assert kept[0]["text"].startswith("line ") and older[-1]["text"] < kept[0]["text"]  # type: ignore[operator]
    total = sum(os.path.getsize(os.path.join(memory, f)) for f in ("notes.jsonl", "small.jsonl"))
    done = enforce_caps(memory, file_cap=BIG, total_cap=total - 1, clock=clock)
    assert [os.path.basename(h.path) for h in done] == ["notes.jsonl"]  # the largest goes first


def test_state_survives_a_restart_and_a_corrupt_file_is_set_aside(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.heartbeat()
    again = load_state(str(tmp_path / "state"))
    assert again.level("L1").runs == 1 and again.heartbeats == 1
    (tmp_path / "state" / "autonomic_state.json").write_text("{not json")
    assert load_state(str(tmp_path / "state")) == AutonomicState()
    assert (tmp_path / "state" / "autonomic_state.json.corrupt").exists()
    save_state(str(tmp_path / "state"), again)
    assert load_state(str(tmp_path / "state")).heartbeats == 1

"""The engine behind the service: selection, the floor, learning from successes, persistence, fallback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from embed_support import FAKE, builtin_menu, sandbox_policy

from machina.embed.arrays import gpu_module
from machina.embed.engine import BadRequest, EmbedEngine, EngineSettings, MenuItem, parse_menu
from machina.embed.history import FILE_NAME, SuccessHistory
from machina.embed.providers import CommandProvider, CommandSpec
from machina.proc import Rlimits


def settings(dim: int = 128, floor: float = 0.1, **kw: int) -> EngineSettings:
    values = {"max_chars": 4096, "max_texts": 20000, "cache_entries": 50000, **kw}
    return EngineSettings(dim=dim, floor=floor, **values)


def engine(state: Path, *, command: CommandProvider | None = None, xp=np, **kw) -> EmbedEngine:  # type: ignore[no-untyped-def]
    return EmbedEngine(settings(**kw), SuccessHistory(str(state), keep=256, fsync=True), command, xp)


def menu() -> list[MenuItem]:
    return parse_menu(builtin_menu(), 1000)


def test_select_picks_the_matching_tool_and_scores_every_sid(tmp_path: Path) -> None:
    reply = engine(tmp_path).select("scan app.log for ERROR lines", menu(), top_k=3)
    assert reply["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
    assert len(reply["picks"]) == 3
    assert reply["picks"][0]["score"] >= reply["picks"][1]["score"] >= reply["picks"][2]["score"]
    assert set(reply["scores"]) == {item.sid for item in menu()}
    assert reply["below_floor"] is False and reply["provider"] == "hash" and reply["fallback"] is False


def test_same_request_same_answer_and_menu_order_breaks_ties(tmp_path: Path) -> None:
    e = engine(tmp_path)
    twin = {"aid": "AID.X.v1", "name": "x", "tags": ["tag.log"], "description": "scan logs"}
    items = parse_menu([{"sid": "SID0002", **twin}, {"sid": "SID0001", **twin, "aid": "AID.Y.v1"}], 10)
    first = e.select("scan logs", items, top_k=2)
    assert [p["sid"] for p in first["picks"]] == ["SID0002", "SID0001"]  # equal scores: menu position wins
    assert first["picks"][0]["score"] == first["picks"][1]["score"]
    assert e.select("scan logs", items, top_k=2) == first
    reversed_items = list(reversed(items))
    assert [p["sid"] for p in e.select("scan logs", reversed_items, 2)["picks"]] == ["SID0001", "SID0002"]


def test_below_the_floor_nothing_should_be_used(tmp_path: Path) -> None:
    reply = engine(tmp_path, floor=0.3).select("zebra giraffe antelope", menu())
    assert reply["below_floor"] is True
    assert reply["picks"][0]["score"] < 0.3
    assert engine(tmp_path).select("anything", [])["below_floor"] is True


def test_successes_move_the_centroid_and_survive_a_restart(tmp_path: Path) -> None:
    goal = "tally the crash dumps"
    e = engine(tmp_path)
    before = e.select(goal, menu())
    assert before["picks"][0]["aid"] != "AID.ERROR_SCAN.v1"
    for text in ("tally the crash dumps", "tally crash dumps from last night", "tally dumps"):
        e.record_success("AID.ERROR_SCAN.v1", text)
    after = e.select(goal, menu())
    assert after["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
    sid = after["picks"][0]["sid"]
    assert after["scores"][sid] > before["scores"][sid]
    # A new engine on the same state directory (a restart) starts from the recorded successes.
    restarted = engine(tmp_path)
    assert restarted.history.successes("AID.ERROR_SCAN.v1") == 3
    assert restarted.select(goal, menu()) == after
    doc = json.loads((tmp_path / FILE_NAME).read_text())
    assert doc["tools"]["AID.ERROR_SCAN.v1"]["goals"][-1] == "tally dumps"


def test_history_keeps_the_latest_goals(tmp_path: Path) -> None:
    history = SuccessHistory(str(tmp_path), keep=2, fsync=False)
    for i in range(5):
        history.add("AID.A.v1", f"goal {i}")
    assert history.goals("AID.A.v1") == ("goal 3", "goal 4")
    assert history.successes("AID.A.v1") == 5


def test_a_corrupt_history_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text('{"format": 1, "tools": {"AID.A.v1": ')
    history = SuccessHistory(str(tmp_path), keep=8, fsync=False)
    assert history.tools() == 0
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith(FILE_NAME + ".corrupt")]
    assert len(aside) == 1
    history.add("AID.A.v1", "works again")
    assert SuccessHistory(str(tmp_path), keep=8, fsync=False).goals("AID.A.v1") == ("works again",)


def test_a_failed_write_records_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    history = SuccessHistory(str(state), keep=8, fsync=True)
    history.add("AID.A.v1", "first")
    os.rename(state, tmp_path / "gone")  # the directory vanishes: the write fails
    with pytest.raises(OSError):
        history.add("AID.A.v1", "second")
    assert history.successes("AID.A.v1") == 1 and history.goals("AID.A.v1") == ("first",)


def test_a_failing_command_makes_the_whole_selection_hash(tmp_path: Path) -> None:
    def command(mode: str) -> CommandProvider:
        spec = CommandSpec((sys.executable, str(FAKE), mode), 10000, Rlimits(), 64, sandbox=sandbox_policy())
        return CommandProvider(spec, 128)

    good = engine(tmp_path / "a", command=command("good"))
    cmd_reply = good.select("scan the logs", menu())
    assert cmd_reply["provider"] == "cmd" and cmd_reply["fallback"] is False
    # Centroids are now cached in cmd space; the command then breaks.
    assert good.command is not None
    good.command.spec = CommandSpec(
        (sys.executable, str(FAKE), "exit3"), 10000, Rlimits(), 64, sandbox=sandbox_policy()
    )
    fallen = good.select("scan the logs", menu())
    assert fallen["provider"] == "hash" and fallen["fallback"] is True
    pure_hash = engine(tmp_path / "b").select("scan the logs", menu())
    assert fallen["scores"] == pure_hash["scores"]  # never a cmd centroid against a hash goal
    stats = good.stats()
    assert stats["fallbacks"] == 1 and stats["command"]["failures"]["exit"] == 1


def test_embed_falls_back_and_says_so(tmp_path: Path) -> None:
    broken = CommandProvider(
        CommandSpec((sys.executable, str(FAKE), "garbage"), 10000, Rlimits(), 64, sandbox=sandbox_policy()), 128
    )
    vectors, space = engine(tmp_path, command=broken).embed(["hello world"])
    assert space == "hash"
    np.testing.assert_allclose(vectors, engine(tmp_path).embed(["hello world"])[0])


def test_long_texts_are_cut_to_max_chars(tmp_path: Path) -> None:
    e = engine(tmp_path, max_chars=16)
    long, cut = e.embed(["read the file please and then more words", "read the file pl"])[0]
    np.testing.assert_array_equal(long, cut)


def test_a_cache_smaller_than_the_menu_still_answers(tmp_path: Path) -> None:
    small = engine(tmp_path, cache_entries=2)
    assert small.select("scan logs", menu()) == engine(tmp_path).select("scan logs", menu())


@pytest.mark.parametrize(
    ("menu_json", "message"),
    [
        ("{}", "must be a list"),
        ('[{"aid": "AID.A.v1"}]', r"menu\[0\]\.sid"),
        ('[{"sid": "S1", "aid": "AID.A.v1", "tags": "tag.x"}]', "tags must be a list"),
        ('[{"sid": "S1", "aid": "A"}, {"sid": "S1", "aid": "B"}]', "appears twice"),
        (json.dumps([{"sid": f"S{i}", "aid": "A"} for i in range(11)]), "more than"),
    ],
)
def test_bad_menus_are_refused_clearly(menu_json: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_menu(json.loads(menu_json), 10)


def test_engine_on_numpy_and_cupy_agree(tmp_path: Path) -> None:
    cupy = gpu_module()
    if cupy is None:
        pytest.skip("cupy is not installed or no GPU answers: numpy/cupy agreement needs a GPU machine")
    on_cpu, on_gpu = engine(tmp_path / "cpu", xp=np), engine(tmp_path / "gpu", xp=cupy)
    for goal in ("scan app.log for ERROR lines", "download a page", "remember this"):
        cpu, gpu = on_cpu.select(goal, menu(), 3), on_gpu.select(goal, menu(), 3)
        assert [p["sid"] for p in gpu["picks"]] == [p["sid"] for p in cpu["picks"]]
        for sid, score in cpu["scores"].items():
            assert gpu["scores"][sid] == pytest.approx(score, abs=1e-5)

"""Self-evolution under the regression gate, RandomStimulus as a burst's last resort, and the alert spool."""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina import alerts
from machina.autonomic import evolve, stimulus
from machina.autonomic.engine import Engine, Evolution, Limits, Means
from machina.autonomic.state import load_state
from machina.autonomic.timings import LEVELS, NORMAL
from machina.autonomic.toolcalls import ToolUse
from machina.clock import FakeClock
from machina.config import ConfigError, load
from machina.llm import open_backend
from machina.testing.fake_llm import FakeLLM
from machina.testing.toolhost import RunningToolhost, running_toolhost

START = 1_800_000_000.0
BIG = 1 << 40


def passes(n: int, failed: int = 0) -> tuple[str, ...]:
    """A regression command printing a plain pass-count line."""
    return (sys.executable, "-c", f"print('{n} passed, {failed} failed')")


def make_engine(root: Path, means: Means, clock: FakeClock, evolution: Evolution | None = None) -> Engine:
    state = load_state(str(root / "state"))
    state.started_at = clock.time()
    return Engine(
        str(root), NORMAL, Limits(BIG, BIG), clock, state, fsync=False, means=means,
        rng=random.Random(7), evolution=evolution,
    )  # fmt: skip


def model_means(fake: FakeLLM) -> Means:
    cfg = load(
        {
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_CHAT_BACKEND": "oai_compat",
            "OAI_COMPAT_BASE_URL": fake.base_url,
            "OAI_COMPAT_MODEL": "test-model",
        }
    )
    return Means(model=open_backend(cfg))


def spooled(root: Path) -> list[alerts.Alert]:
    return [alert for _path, alert in alerts.pending(str(root / "state"))]


# --- self-evolution ------------------------------------------------------------------------------------


def test_a_change_the_gate_accepts_is_kept_with_its_previous_version(machina_root: Path) -> None:
    clock = FakeClock(start=START)
    (machina_root / "prompts").mkdir()
    (machina_root / "prompts" / "chat.txt").write_text("old prompt\n")
    proposal = {"path": "prompts/chat.txt", "content": "new prompt\n", "why": "clearer"}
    with FakeLLM([{"json": proposal}]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, passes(3), 30.0))
        outcome = engine.run_level("EV")
    assert outcome.ok and outcome.detail["kept"], outcome.summary
    assert (machina_root / "prompts" / "chat.txt").read_text() == "new prompt\n"
    (history,) = (machina_root / "memory" / evolve.HISTORY_DIR).iterdir()
    assert json.loads(history.read_text())["previous"] == "old prompt\n"
    assert json.loads((machina_root / "memory" / "regression_baseline.json").read_text())["passed"] == 3
    assert [a.tier for a in spooled(machina_root)] == [alerts.MILESTONE] and engine.state.alerts == 1


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ((), "MACHINA_REGRESSION_CMD is not set"),
        (passes(1, 2), "fewer than the baseline"),
        ((sys.executable, "-c", "print('all good, trust me')"), "no pass count"),
        (("/nonexistent/test-runner",), "could not start"),
    ],
    ids=["no_command", "fewer_passes", "garbage_output", "missing_program"],
)
def test_a_change_the_gate_rejects_leaves_the_root_as_it_was(
    machina_root: Path, command: tuple[str, ...], why: str
) -> None:
    clock = FakeClock(start=START)
    (machina_root / "memory" / "regression_baseline.json").write_text('{"passed": 3}\n')
    proposal = {"path": "prompts/chat.txt", "content": "worse prompt\n"}
    with FakeLLM([{"json": proposal}]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, command, 30.0))
        outcome = engine.run_level("EV")
    assert not outcome.ok and why in outcome.summary, outcome.summary
    assert not (machina_root / "prompts").exists()
    assert not (machina_root / "memory" / evolve.HISTORY_DIR).exists()
    assert "rejected by the regression gate" in spooled(machina_root)[0].text


@pytest.mark.parametrize(
    "path",
    [
        "policies/driver.py",
        "memory/insights.jsonl",
        "../outside.txt",
        "prompts/../../escape.txt",
        "/etc/machina/machina.env",
        "prompts/.hidden.txt",
        "prompts/run.sh",
        "prompts",
    ],
)
def test_a_proposal_outside_what_the_agent_owns_is_refused_before_the_gate(machina_root: Path, path: str) -> None:
    clock = FakeClock(start=START)
    marker = machina_root / "gate-ran"
    command = (sys.executable, "-c", f"open({str(marker)!r}, 'w'); print('9 passed, 0 failed')")
    with FakeLLM([{"json": {"path": path, "content": "x"}}]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, command, 30.0))
        outcome = engine.run_level("EV")
    assert not outcome.ok and not outcome.acted and "no change" in outcome.summary, outcome.summary
    assert not marker.exists()


def test_a_symlink_in_the_owned_tree_is_not_followed(machina_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, machina_root / "prompts")
    clock = FakeClock(start=START)
    with FakeLLM([{"json": {"path": "prompts/chat.txt", "content": "x"}}]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, passes(1), 30.0))
        outcome = engine.run_level("EV")
    assert not outcome.ok and "symbolic link" in outcome.summary, outcome.summary
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("answer", [{"garbage": True}, {"truncate": True, "json": {"path": "prompts/a.txt"}}])
def test_an_unusable_model_answer_changes_nothing(machina_root: Path, answer: dict[str, Any]) -> None:
    clock = FakeClock(start=START)
    with FakeLLM([answer]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, passes(1), 30.0))
        outcome = engine.run_level("EV")
    assert not outcome.ok and not outcome.acted
    assert not (machina_root / "prompts").exists()


def test_self_evolution_is_off_unless_enabled_and_refused_under_prod(machina_root: Path) -> None:
    clock = FakeClock(start=START)
    with FakeLLM([]) as fake:
        engine = make_engine(machina_root, model_means(fake), clock)
        assert engine.run_level("EV").summary.startswith("off")
        assert not engine.evolution_due()
        assert fake.chat_requests == []
    with pytest.raises(ConfigError, match="MACHINA_SELF_EVOLVE=1 is refused under MACHINA_PROFILE=prod"):
        load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_PROFILE": "prod", "MACHINA_SELF_EVOLVE": "1"})


def test_self_evolution_runs_on_its_own_interval_in_the_heartbeat(machina_root: Path) -> None:
    clock = FakeClock(start=START)
    proposal = {"path": "skills/note.md", "content": "a note\n"}
    with FakeLLM([{"json": proposal}] * 2) as fake:
        engine = make_engine(machina_root, model_means(fake), clock, Evolution(True, passes(1), 30.0))
        assert [o.level for o in engine.heartbeat() if o.level == "EV"] == ["EV"]
        clock.advance(NORMAL.evolve_interval_s - 1)
        engine.state.last_user_activity = clock.time()  # someone is around: no burst, and EV is not due yet
        assert "EV" not in [o.level for o in engine.heartbeat()]
        clock.advance(1)
        assert "EV" in [o.level for o in engine.heartbeat()]


# --- RandomStimulus --------------------------------------------------------------------------------------


@pytest.fixture
def host(machina_root: Path) -> Iterator[RunningToolhost]:
    with running_toolhost(str(machina_root), env={"MACHINA_PERMISSION_MODE": "standard"}) as running:
        yield running


def test_stimulus_candidates_are_safe_tools_without_inputs(host: RunningToolhost) -> None:
    listed = host.client.list_tools()
    aids = {t["aid"] for t in stimulus.candidates(listed)}
    assert "AID.NOOP.v1" in aids
    by_aid = {t["aid"]: t for t in listed}
    assert all(by_aid[a]["tier"] == 0 and not by_aid[a]["inputs_schema"].get("required") for a in aids)
    assert not aids & {"AID.SHELL.EXEC.v1", "AID.FILE.WRITE.v1", "AID.NET.HTTP_GET.v1"}


def test_a_stalled_burst_pokes_a_random_safe_tool_at_most_three_times(
    machina_root: Path, host: RunningToolhost
) -> None:
    clock = FakeClock(start=START)
    tools = ToolUse(host.client, str(machina_root / "memory"), clock, fsync=False)
    only_noop = [t for t in host.client.list_tools() if t["aid"] == "AID.NOOP.v1"]
    engine = make_engine(machina_root, Means(tools=tools, catalog=lambda: only_noop), clock)  # no model: no SQ
    engine.state.last_user_activity = clock.time()
    clock.advance(NORMAL.burst_after_idle_s)
    for level in LEVELS:  # nothing is due: the burst has nothing to do but the stimulus
        engine.state.level(level).last_run = clock.time()
    ran = [o.summary for _ in range(6) for o in engine.heartbeat()]
    assert ran == ["AID.NOOP.v1 -> ok"] * stimulus.MAX_PER_BURST
    experiences = (machina_root / "memory" / "experiences.jsonl").read_text().splitlines()
    assert [json.loads(e)["record"]["user_request"] for e in experiences] == ["random stimulus"] * 3
    assert engine.state.burst_stalled == 3
    assert spooled(machina_root)[0].text.startswith("burst started")


# --- the alert spool ------------------------------------------------------------------------------------------


def test_alerts_are_read_oldest_first_and_removed_once_sent(tmp_path: Path) -> None:
    clock = FakeClock(start=START)
    alerts.post(str(tmp_path), alerts.STREAM, "first", source="t", clock=clock, fsync=False)
    clock.advance(1)
    alerts.post(str(tmp_path), alerts.MILESTONE, "second", source="t", clock=clock, fsync=False)
    got = list(alerts.pending(str(tmp_path)))
    assert [(a.tier, a.text) for _p, a in got] == [(alerts.STREAM, "first"), (alerts.MILESTONE, "second")]
    alerts.sent(got[0][0])
    assert [a.text for _p, a in alerts.pending(str(tmp_path))] == ["second"]
    with pytest.raises(ValueError, match="alert tier"):
        alerts.post(str(tmp_path), "urgent", "x", source="t", clock=clock, fsync=False)


def test_a_full_spool_drops_stream_alerts_before_milestones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "SPOOL_CAP", 3)
    clock = FakeClock(start=START)
    for tier, text in [("milestone", "m1"), ("stream", "s1"), ("stream", "s2"), ("milestone", "m2")]:
        clock.advance(1)
        alerts.post(str(tmp_path), tier, text, source="t", clock=clock, fsync=False)
    assert [a.text for _p, a in alerts.pending(str(tmp_path))] == ["m1", "s2", "m2"]


def test_an_unreadable_alert_is_set_aside_not_sent(tmp_path: Path) -> None:
    spool = Path(alerts.spool_dir(str(tmp_path)))
    spool.mkdir()
    (spool / "00000000000000000001-stream-aaaa.json").write_text("{not json")
    (spool / "00000000000000000002-stream-bbbb.json").write_text('{"tier": "loud", "text": "x", "at": 1}')
    assert list(alerts.pending(str(tmp_path))) == []
    assert sorted(p.name for p in spool.iterdir()) == [
        "00000000000000000001-stream-aaaa.json.bad",
        "00000000000000000002-stream-bbbb.json.bad",
    ]

"""The chat driver contract (MACHINA_CHAT_CMD): the built-in driver as a program against the fake LLM server,
and scripted drivers for the environment, config answers, timeouts and garbage."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from machina.agent import Limits, Session
from machina.agent import events as ev
from machina.agent.driver import ExternalDriver
from tests.agent.conftest import backend_settings, of, run_turn

SCAN_ACTION = {
    "type": "action",
    "actions": [
        {"kind": "tool", "aid": "AID.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"}}
    ],
    "needs_summary": True,
}
KEY = "sk-driver-own-key-0123456789"
OTHER_SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-not-for-this-driver", "MACHINA_AUDIT_KEY": "audit-key-not-for-drivers"}


def session_with(host: Any, driver: ExternalDriver, root: Path, clock: Any) -> Session:
    limits = Limits(max_cycles=10, budget_s=600, permission_timeout_s=180)
    return Session(None, host.client, limits, memory_dir=str(root / "memory"), clock=clock, driver=driver)


def script_driver(tmp_path: Path, body: str, **options: Any) -> ExternalDriver:
    script = tmp_path / "driver.py"
    script.write_text("import json, os, sys, time\nrequest = json.load(sys.stdin)\n" + textwrap.dedent(body))
    settings = backend_settings("oai_compat", "http://127.0.0.1:9", OAI_COMPAT_API_KEY=KEY, **OTHER_SECRETS)
    return ExternalDriver(
        [sys.executable, str(script)], settings, options.pop("timeout_s", 30), str(tmp_path), **options
    )


def test_the_builtin_driver_program_runs_a_scan_and_summarises_it(
    toolhost: Any, fake_llm: Any, agent_root: Path, clock: Any
) -> None:
    host = toolhost()
    fake = fake_llm(
        [{"json": SCAN_ACTION}, {"json": {"content": "Two errors; the first: disk full on /var."}}], api_key=KEY
    )
    settings = backend_settings("oai_compat", fake.base_url, OAI_COMPAT_API_KEY=KEY, **OTHER_SECRETS)
    driver = ExternalDriver(["machina-chat-driver"], settings, 30, str(agent_root))
    events = run_turn(session_with(host, driver, agent_root, clock), "scan data/app.log for ERROR")
    assert of(events, ev.ToolResult)[0].ok
    assert of(events, ev.Reply) == [ev.Reply("Two errors; the first: disk full on /var.", "model")]
    assert events[-1].cycles == 2  # intent, summary
    intent, summary = fake.chat_requests
    assert intent.headers["authorization"] == f"Bearer {KEY}"
    assert "ERROR_SCAN" in json.dumps(intent.body) and "disk full on /var" in json.dumps(summary.body)


def test_a_driver_sees_its_own_settings_and_no_other_secret(
    toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    driver = script_driver(
        tmp_path,
        """
        print("some chatter first")
        print(json.dumps({"type": "reply", "content": json.dumps(dict(os.environ))}))
        print(json.dumps({"type": "reply", "content": "a second JSON line is ignored"}))
        """,
        timeout_s=7,
    )
    events = run_turn(session_with(toolhost(), driver, agent_root, clock), "what is your environment?")
    env = json.loads(of(events, ev.Reply)[0].text)
    assert env["OAI_COMPAT_API_KEY"] == KEY and env["MACHINA_CHAT_BACKEND"] == "oai_compat"
    assert env["MACHINA_CHAT_TIMEOUT_MS"] == "7000"
    assert not set(OTHER_SECRETS) & set(env)
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "MACHINA_ENV_FILE", "MACHINA_CHAT_TIMEOUT_MS"} | {
        k for k in env if k.startswith(("MACHINA_CHAT_", "OAI_COMPAT_"))
    }


def test_a_config_answer_changes_only_model_settings_and_only_when_confirmed(
    toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    driver = script_driver(
        tmp_path,
        """
        changes = [
            {"key": "MACHINA_PERMISSION_MODE", "value": "open"},
            {"key": "OAI_COMPAT_BASE_URL", "value": "http://evil.example"},
            {"key": "model", "value": "bigger-model"},
            {"key": "temperature", "value": 0.2},
        ]
        print(json.dumps({"type": "config", "changes": changes}))
        """,
    )
    session = session_with(toolhost("supervised"), driver, agent_root, clock)
    events = run_turn(session, "switch everything")
    refused = [e.message for e in of(events, ev.Error)]
    assert any("MACHINA_PERMISSION_MODE" in m for m in refused) and any("OAI_COMPAT_BASE_URL" in m for m in refused)
    assert of(events, ev.ConfigProposed)[0].proposal.changes == {"model": "bigger-model", "temperature": 0.2}
    assert of(events, ev.ConfigDecided)[0].applied == {}  # nobody confirmed
    assert driver.settings["OAI_COMPAT_MODEL"] == "test-model"

    def confirm(event: Any) -> None:
        if isinstance(event, ev.ConfigProposed):
            event.proposal.confirm()

    events = run_turn(session, "switch everything", confirm)
    assert of(events, ev.ConfigDecided)[0].applied == {"model": "bigger-model", "temperature": 0.2}
    assert driver.settings["OAI_COMPAT_MODEL"] == "bigger-model"
    assert driver.settings["MACHINA_CHAT_TEMPERATURE"] == "0.2"
    assert driver.settings["OAI_COMPAT_BASE_URL"] == "http://127.0.0.1:9"
    assert {t["aid"]: t["permission"] for t in session.toolbox.client.list_tools()}["AID.FILE.WRITE.v1"] == "ask"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("time.sleep(30)\n", "no answer within"),
        ("print('not json at all')\nsys.exit(3)\n", "no JSON answer"),
        ("print(json.dumps({'type': 'action', 'actions': []}))\n", "does not fit the contract"),
    ],
    ids=["slow", "garbage", "off-contract"],
)
def test_a_driver_that_fails_its_first_call_leaves_the_fallback(
    body: str, why: str, toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    driver = script_driver(tmp_path, body, timeout_s=1, grace_s=0.5)
    session = session_with(toolhost(), driver, agent_root, clock)
    events = run_turn(session, "scan data/app.log for ERROR")
    assert why in of(events, ev.Error)[0].message
    assert of(events, ev.Reply)[0].source == "fallback" and "disk full" in of(events, ev.Reply)[0].text
    other = run_turn(session, "write me a poem")
    assert other[-1].reason == ev.UNAVAILABLE


def test_driver_contract_loop_continue_then_done_and_a_goal_without_an_engine_is_refused(
    toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    driver = script_driver(
        tmp_path,
        """
        mode = request["mode"]
        if mode == "intent":
            goal = {"kind": "goal", "goal_id": "goal.ERROR_SCAN.v1", "inputs": {}}
            tool = {"kind": "tool", "aid": "AID.PROC.SELF_METRICS.v1", "inputs": {}}
            print(json.dumps({"type": "action", "actions": [goal, tool], "needs_summary": False}))
        elif "action_results" in request:
            ok = [r["success"] for r in request["action_results"]]
            print(json.dumps({"type": "done", "content": "results: " + json.dumps(ok)}))
        else:
            print(json.dumps({"type": "continue"}))
        """,
    )
    events = run_turn(session_with(toolhost(), driver, agent_root, clock), "how is the machine and the goal?")
    assert of(events, ev.Reply)[0].text == "results: [false, true]"
    refused = of(events, ev.ToolResult)[0]
    assert (refused.aid, refused.status) == ("goal.ERROR_SCAN.v1", "refused")
    assert "goals are not available" in refused.error


GOAL_DRIVER = """
if request["mode"] == "intent":
    goal = {"kind": "goal", "goal_id": "goal.ERROR_SCAN.v1",
            "inputs": {"input_path": "data/app.log", "pattern": "ERROR", "report_path": "reports/chat.md"}}
    print(json.dumps({"type": "action", "actions": [goal], "needs_summary": True}))
else:
    result = request["action_results"][0]
    print(json.dumps({"content": "goal: " + json.dumps([result["success"], result.get("status")])}))
"""


def goal_session(host: Any, driver: ExternalDriver, root: Path, clock: Any) -> Session:
    from machina.agent.goals import EngineGoals
    from machina.config import load
    from machina.engine import Engine
    from machina.root import open_root

    cfg = load({"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root)})
    goals = EngineGoals(Engine.from_config(cfg, open_root(cfg), host.client))
    limits = Limits(max_cycles=10, budget_s=600, permission_timeout_s=180)
    return Session(None, host.client, limits, memory_dir=str(root / "memory"), clock=clock, driver=driver, goals=goals)


def test_a_goal_action_runs_through_the_engine_with_its_run_log(
    toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    session = goal_session(toolhost(), script_driver(tmp_path, GOAL_DRIVER), agent_root, clock)
    events = run_turn(session, "scan the log and write a report")
    assert of(events, ev.Reply)[0].text == 'goal: [true, "done"]'
    assert "ERROR disk full on /var" in (agent_root / "reports" / "chat.md").read_text()
    assert list((agent_root / "logs").glob("run_*.jsonl"))


@pytest.mark.parametrize("allow", [True, False])
def test_a_goal_whose_report_needs_approval_runs_again_only_with_a_yes(
    allow: bool, toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    session = goal_session(toolhost("supervised"), script_driver(tmp_path, GOAL_DRIVER), agent_root, clock)

    def answer(event: Any) -> None:
        if isinstance(event, ev.ApprovalNeeded):
            assert event.request.aid == "AID.REPORT_SUMMARY.v1" and "findings" in event.request.inputs
            event.request.allow_once() if allow else event.request.deny()

    events = run_turn(session, "scan the log and write a report", answer)
    assert len(of(events, ev.ApprovalNeeded)) == 1
    report = agent_root / "reports" / "chat.md"
    if allow:
        assert of(events, ev.Reply)[0].text == 'goal: [true, "done"]' and report.exists()
    else:
        assert of(events, ev.Reply)[0].text == 'goal: [false, "asked"]' and not report.exists()


def test_cancel_kills_a_driver_that_is_still_thinking(
    toolhost: Any, tmp_path: Path, agent_root: Path, clock: Any
) -> None:
    import threading

    started = tmp_path / "started"
    driver = script_driver(tmp_path, f"open({str(started)!r}, 'w').close()\ntime.sleep(60)\n", timeout_s=60)
    session = session_with(toolhost(), driver, agent_root, clock)
    turn = session.send("think hard")
    waiter = threading.Thread(target=lambda: _cancel_once_started(session, started), daemon=True)
    waiter.start()
    events = list(turn)
    waiter.join()
    assert events[-1].reason == ev.CANCELLED
    assert not of(events, ev.Reply)
    from machina.testing.processes import processes_with_arg

    assert processes_with_arg(str(tmp_path / "driver.py")) == []  # its process group was killed


def _cancel_once_started(session: Session, started: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    session.cancel()

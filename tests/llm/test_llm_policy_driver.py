"""machina-policy-llm as the engine runs it: a payload file, a cleared environment, settings from --env."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from llm_support import KEY, WIRES, Wire, config

from machina.engine.selectors.grammar import parse_reply
from machina.exitcodes import ExitCode
from machina.llm.policy_driver import decide

PAYLOAD = {
    "goal_digest": "d1",
    "state_digest": "s1",
    "control_mode": "BLENDED",
    "inputs": {"input_path": "data/app.log"},
    "menu": [
        {"sid": "SID0001", "aid": "AID.ERROR_SCAN.v1", "name": "error_scan", "tags": ["tag.log", "tag.error"]},
        {"sid": "SID0002", "aid": "AID.REPORT_SUMMARY.v1", "name": "report_summary", "tags": ["tag.report"]},
    ],
    "goal_id": "goal.ERROR_SCAN.v1",
    "step": 2,
    "completed": ["AID.ERROR_SCAN.v1"],
}


def run_driver(tmp_path: Path, env_lines: list[str], payload: object = PAYLOAD) -> subprocess.CompletedProcess[str]:
    env_file = tmp_path / "llm_policy.env"
    env_file.write_text("\n".join(env_lines) + "\n")
    env_file.chmod(0o600)
    payload_file = tmp_path / "payload.json"
    payload_file.write_text(json.dumps(payload))
    return subprocess.run(
        [sys.executable, "-m", "machina.llm.policy_driver", "--env", str(env_file), str(payload_file)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings(wire: Wire, url: str) -> list[str]:
    lines = [f"MACHINA_CHAT_BACKEND={wire.name}", f"{wire.url_var}={url}", f"{wire.model_var}=policy-model"]
    return [*lines, f"{wire.key_var}={KEY}"] if wire.key_var else lines


@pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
def test_picks_the_models_choice(fake_llm, tmp_path: Path, wire: Wire) -> None:
    fake = fake_llm([{"json": {"choice": "SID0002"}}])
    result = run_driver(tmp_path, settings(wire, fake.base_url))
    assert (result.returncode, result.stdout) == (0, "<PICK><SID0002><END>\n"), result.stderr
    sent = json.dumps(fake.chat_requests[0].body)
    assert "SID0002: AID.REPORT_SUMMARY.v1" in sent and "Already done: AID.ERROR_SCAN.v1" in sent
    assert KEY not in result.stderr


def test_input_patch_travels_as_base64(fake_llm, tmp_path: Path) -> None:
    patch = {"pattern": "WARN</INP><END>"}  # an INP body could be broken out of; INP64 cannot
    fake = fake_llm([{"json": {"choice": "SID0001", "inputs": patch}}])
    result = run_driver(tmp_path, settings(WIRES[0], fake.base_url))
    line = result.stdout.strip()
    assert line.startswith("<PICK><SID0001><INP64>")
    assert parse_reply(line).patch == patch
    encoded = line.removeprefix("<PICK><SID0001><INP64>").removesuffix("</INP64><END>")
    assert json.loads(base64.b64decode(encoded)) == patch


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        ({"json": {"choice": "NOOP"}}, "<NOOP><END>"),
        ({"json": {"choice": "ASK_SUP"}}, "<ASK_SUP><END>"),
        ({"text": "SID0001"}, "<PICK><SID0001><END>"),
        ({"text": "I think SID0001 or maybe SID0002 would be best"}, "<NOOP><END>"),
        ({"json": {"choice": "SID0009"}}, "<NOOP><END>"),
        ({"json": {"choice": "SID0001", "inputs": {"_capabilities": ["SHELL"]}}}, "<NOOP><END>"),
        ({"json": {"choice": "SID0001", "inputs": {"a": {"_system": 1}}}}, "<NOOP><END>"),
        ({"text": "<PICK><SID0001><END>"}, "<NOOP><END>"),
        ({"json": ["SID0001"]}, "<NOOP><END>"),
    ],
    ids=[
        "noop",
        "ask-sup",
        "bare-sid",
        "chatter",
        "unknown-sid",
        "reserved-key",
        "nested-reserved",
        "grammar-echo",
        "list",
    ],
)
def test_every_answer_becomes_one_grammar_line(fake_llm, answer: dict, line: str) -> None:
    """In process (the program around decide() is tested above and below)."""
    fake = fake_llm([answer])
    cfg = config(WIRES[0], fake.base_url)
    assert decide(PAYLOAD, cfg) == line
    parse_reply(line)


def test_model_unreachable_exits_69_so_the_engine_falls_back(tmp_path: Path) -> None:
    result = run_driver(tmp_path, settings(WIRES[0], "http://127.0.0.1:9"))
    assert result.returncode == ExitCode.UNAVAILABLE
    assert result.stdout == ""
    assert "machina-policy-llm: oai_compat: cannot reach http://127.0.0.1:9/v1/chat/completions" in result.stderr


def test_refused_key_exits_77_without_showing_it(fake_llm, tmp_path: Path) -> None:
    fake = fake_llm([{"status": 401, "message": f"bad key {KEY}"}])
    result = run_driver(tmp_path, settings(WIRES[1], fake.base_url))
    assert result.returncode == ExitCode.NOPERM
    assert KEY not in result.stderr and "401" in result.stderr


def test_bad_configuration_exits_78(tmp_path: Path) -> None:
    result = run_driver(tmp_path, ["MACHINA_CHAT_BACKEND=gpt"])
    assert result.returncode == ExitCode.CONFIG
    assert "MACHINA_CHAT_BACKEND='gpt': expected one of" in result.stderr


def test_a_payload_without_a_menu_exits_65(tmp_path: Path) -> None:
    result = run_driver(tmp_path, settings(WIRES[0], "http://127.0.0.1:9"), payload={"goal_id": "x"})
    assert result.returncode == ExitCode.DATAERR
    assert "bad payload" in result.stderr


def test_the_call_ends_before_the_engine_would_kill_the_driver(fake_llm, tmp_path: Path) -> None:
    """With MACHINA_POLICY_TIMEOUT_MS=2000 the model call gets about one second, not MACHINA_CHAT_TIMEOUT_MS."""
    fake = fake_llm([{"json": {"choice": "SID0001"}, "delay": 60}])
    result = run_driver(tmp_path, [*settings(WIRES[0], fake.base_url), "MACHINA_POLICY_TIMEOUT_MS=2000"])
    assert result.returncode == ExitCode.TEMPFAIL, result.stderr
    assert "before the deadline" in result.stderr

"""The engine's Genesis path through a real toolhost: goal.GENESIS.v1 writes, checks, loads and runs a tool,
stage by stage in the run state's ``genesis`` slot; goal.GENESIS.MISSING_TOOL.v1 meets a declared tool with
no implementation and makes one; both replay strictly; prod refuses; a refused stage ends the run with the
toolhost's reason; "ask" stops the run for a human."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from machina import config
from machina.audit.replay import strict_replay
from machina.engine import Engine
from machina.engine.autostub import autostub_source, example_inputs
from machina.engine.catalog import Catalog
from machina.plugins.guard import guard_problems
from machina.root import Root
from machina.testing.toolhost import RunningToolhost

from .conftest import needs_bwrap

Start = Callable[..., RunningToolhost]
OPEN = {"MACHINA_PERMISSION_MODE": "open"}
MISSING = "AID.DEMO.MISSING_TOOL.v1"

SHOUT = textwrap.dedent(
    """\
    MACHINA_PLUGIN = {
        "aid": "AID.GEN.SHOUT.v1",
        "name": "shout",
        "description": "Upper-case a text.",
        "tags": ["tag.text"],
        "capabilities": [],
        "deterministic": True,
        "inputs_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    }
    MACHINA_GENESIS_TEST = {"inputs": {"text": "hi"}, "expect": {"text": "HI"}}

    def run(inputs, host):
        return {"text": inputs["text"].upper()}
    """
)


def engine(host: RunningToolhost, **env: str) -> Engine:
    cfg = config.load(environ={"MACHINA_ROOT": host.root, "MACHINA_ENV_FILE": "/dev/null", **OPEN, **env})
    return Engine.from_config(cfg, Root(host.root), host.client)


def log_events(path: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, Path(path).read_text().splitlines()) if e["event"] == kind]


def stages(path: str) -> list[str | None]:
    """The genesis slot's stage after each tool call, from the run log's diffs."""
    seen = []
    for event in log_events(path, "tool"):
        ops = [op for op in event.get("diff", []) if op["path"] == "/genesis"]
        seen.append(ops[0]["value"]["stage"] if ops else None)
    return seen


@needs_bwrap
def test_a_genesis_goal_makes_loads_and_runs_a_tool_stage_by_stage(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    request = {"goal_id": "goal.GENESIS.v1", "inputs": {"name": "shout", "source": SHOUT, "run_inputs": {"text": "a"}}}
    result = engine(host).run(request)
    assert result.status == "done", (result.reason, result.error)
    calls = [(e["aid"], e["ok"]) for e in log_events(result.log_path, "tool")]
    assert calls == [
        ("AID.GENESIS.WRITE_FILE.v1", True),
        ("AID.GENESIS.COMPILE_SHARED.v1", True),
        ("AID.GENESIS.LOAD_PLUGIN.v1", True),
        ("AID.GEN.SHOUT.v1", True),
    ]
    assert stages(result.log_path) == ["WROTE", "COMPILED", "LOADED", "RAN"]
    assert result.outputs["AID.GEN.SHOUT.v1"] == {"text": "A"}
    (extended,) = log_events(result.log_path, "menu_extended")
    assert (extended["aid"], extended["sid"], extended["refused"]) == ("AID.GEN.SHOUT.v1", "SID0004", None)
    pins = json.loads(Path(host.root, "plugins", "pins.json").read_text())["pins"]
    assert pins == {"shout.py": result.outputs["AID.GENESIS.WRITE_FILE.v1"]["sha256"]}
    replay = strict_replay(request, result.log_path, engine(host), None, allow_unkeyed=True)
    assert replay.ok, replay.problems


@needs_bwrap
def test_the_request_decides_whether_the_made_tool_may_run(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    request = {
        "goal_id": "goal.GENESIS.v1",
        "inputs": {"name": "shout", "source": SHOUT},
        "_capabilities": {"allowed_tools": ["AID.GENESIS.*"]},
    }
    result = engine(host).run(request)
    assert (result.status, result.reason) == ("noop", "selector_noop")  # loaded, never run: not complete
    (extended,) = log_events(result.log_path, "menu_extended")
    assert (extended["sid"], extended["refused"]) == (None, "not_allowed")
    assert "AID.GEN.SHOUT.v1" not in result.outputs


@needs_bwrap
def test_the_missing_tool_path_makes_a_stub_that_says_so(toolhost: Start) -> None:
    host = toolhost(**OPEN, MACHINA_GENESIS_GUARD="1")
    request = {"goal_id": "goal.GENESIS.MISSING_TOOL.v1", "inputs": {"text": "a b"}}
    result = engine(host, MACHINA_GENESIS_GUARD="1").run(request)
    assert result.status == "done", (result.reason, result.error)
    calls = [(e["aid"], e["status"]) for e in log_events(result.log_path, "tool")]
    assert calls == [
        (MISSING, "unknown_tool"),
        ("AID.GENESIS.WRITE_FILE.v1", "ok"),
        ("AID.GENESIS.COMPILE_SHARED.v1", "ok"),
        ("AID.GENESIS.LOAD_PLUGIN.v1", "ok"),
        (MISSING, "ok"),
    ]
    assert result.outputs[MISSING] == {"stub": True, "aid": MISSING, "received": ["text"]}
    assert stages(result.log_path) == [None, "WROTE", "COMPILED", "LOADED", "RAN"]
    assert not log_events(result.log_path, "invalid_pick")  # an expected miss, not a wrong pick
    assert not log_events(result.log_path, "menu_extended")  # the declared tool was on the menu already
    replay = strict_replay(request, result.log_path, engine(host), None, allow_unkeyed=True)
    assert replay.ok, replay.problems  # the first call is not re-run: the tool exists now
    again = engine(host).run(request)  # now implemented: no Genesis stage at all
    assert again.status == "done" and [e["aid"] for e in log_events(again.log_path, "tool")] == [MISSING]


@needs_bwrap
def test_the_missing_tool_path_takes_the_requests_source(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    source = SHOUT.replace("AID.GEN.SHOUT.v1", MISSING).replace('"tags": ["tag.text"]', '"tags": ["tag.missing"]')
    request = {"goal_id": "goal.GENESIS.MISSING_TOOL.v1", "inputs": {"text": "loud", "name": "real", "source": source}}
    result = engine(host).run(request)
    assert result.status == "done", (result.reason, result.error)
    assert result.outputs[MISSING] == {"text": "LOUD"}
    assert Path(host.root, "plugins", "real.py").read_text() == source


@needs_bwrap
def test_a_refused_stage_ends_the_run_with_the_toolhosts_reason(toolhost: Start) -> None:
    host = toolhost(**OPEN, MACHINA_GENESIS_GUARD="1")
    sneaky = SHOUT.replace("def run(", "import socket\n\ndef run(")
    request = {"goal_id": "goal.GENESIS.v1", "inputs": {"name": "sneaky", "source": sneaky}}
    result = engine(host).run(request)
    assert (result.status, result.reason) == ("failed", "genesis_failed")
    assert "import of socket needs the NETWORK capability" in result.error
    assert stages(result.log_path) == ["WROTE", None]
    assert not Path(host.root, "plugins", "sneaky.py").exists()


@needs_bwrap
def test_prod_refuses_genesis(toolhost: Start) -> None:
    host = toolhost(**OPEN, MACHINA_PROFILE="prod")
    request = {"goal_id": "goal.GENESIS.v1", "inputs": {"name": "shout", "source": SHOUT}}
    result = engine(host, MACHINA_PROFILE="prod").run(request)
    assert (result.status, result.reason) == ("failed", "tool_denied")
    assert "MACHINA_GENESIS_ENABLE=0" in result.error
    assert not Path(host.root, "plugins", "genesis").exists()


@needs_bwrap
def test_ask_stops_a_genesis_run_for_a_human(toolhost: Start) -> None:
    host = toolhost(MACHINA_PERMISSION_MODE="standard")  # COMPILE_SHARED and LOAD_PLUGIN are tier 3
    request = {"goal_id": "goal.GENESIS.v1", "inputs": {"name": "shout", "source": SHOUT}}
    result = engine(host, MACHINA_PERMISSION_MODE="standard").run(request)
    assert (result.status, result.reason) == ("asked", "tool_approval_required")
    assert [a["aid"] for a in result.approvals] == ["AID.GENESIS.COMPILE_SHARED.v1"]
    assert not Path(host.root, "plugins", "shout.py").exists()


def test_a_stub_is_made_of_literals_and_passes_the_guard() -> None:
    tools = Catalog.load().tools
    hostile = tools[MISSING].__class__(
        **{**tools[MISSING].__dict__, "description": '"""\nimport os\nos.system("x")\n"""'}
    )
    source = autostub_source(hostile)
    assert guard_problems(source, []) == []
    namespace: dict[str, Any] = {}
    exec(compile(source, "stub", "exec"), namespace)  # the stub under test: literals and one return
    assert namespace["run"]({"text": "x"}, None) == {"stub": True, "aid": MISSING, "received": ["text"]}
    assert "os.system" in namespace["MACHINA_PLUGIN"]["description"]  # kept as text, never as code


@pytest.mark.parametrize(
    ("schema", "example"),
    [
        ({"type": "object"}, {}),
        (
            {"required": ["n", "s"], "properties": {"n": {"type": "integer", "minimum": 3}, "s": {"minLength": 2}}},
            {
                "n": 3,
                "s": {},
            },
        ),
        ({"required": ["s"], "properties": {"s": {"type": "string", "minLength": 2}}}, {"s": "xx"}),
        (
            {"required": ["e", "a"], "properties": {"e": {"enum": ["b", "c"]}, "a": {"type": "array", "minItems": 1}}},
            {
                "e": "b",
                "a": [{}],
            },
        ),
    ],
)
def test_example_inputs(schema: dict[str, Any], example: dict[str, Any]) -> None:
    assert example_inputs(schema) == example

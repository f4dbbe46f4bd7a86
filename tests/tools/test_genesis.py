"""Genesis through a real toolhost: a plugin written, checked, loaded and run; the quarantine, the guard, the
capability gate, the pin of exactly the checked bytes, the missing-tool path, the breaker, and the prod
profile turning it off."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from machina import toolapi
from machina.clock import FakeClock
from machina.testing.toolhost import RunningToolhost
from machina.toolhost.genesis import Breaker
from machina.tools.base import ToolFailure

from .conftest import needs_bwrap

Start = Callable[..., RunningToolhost]
OPEN = {"MACHINA_PERMISSION_MODE": "open"}


def plugin(aid: str = "AID.GEN.WORDS.v1", body: str = "", caps: str = "[]", test: str = "") -> str:
    test = test or '{"inputs": {"text": "a b c"}, "expect": {"words": 3}}'
    return textwrap.dedent(
        f"""\
        import re
        MACHINA_PLUGIN = {{
            "aid": "{aid}",
            "name": "word_count",
            "description": "Count the words of a text.",
            "capabilities": {caps},
            "inputs_schema": {{"type": "object", "properties": {{"text": {{"type": "string"}}}},
                               "required": ["text"]}},
        }}
        MACHINA_GENESIS_TEST = {test}
        {body}
        def run(inputs, host):
            return {{"words": len(re.findall(r"\\w+", inputs["text"]))}}
        """
    )


def genesis(host: RunningToolhost, step: str, inputs: dict[str, object]) -> toolapi.ToolReply:
    return host.client.call(f"AID.GENESIS.{step}.v1", inputs)


def create(host: RunningToolhost, name: str, source: str) -> toolapi.ToolReply:
    written = genesis(host, "WRITE_FILE", {"name": name, "source": source})
    assert written.ok, written
    return genesis(host, "COMPILE_SHARED", {"name": name})


@needs_bwrap
def test_write_compile_load_run(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    written = genesis(host, "WRITE_FILE", {"name": "word_count", "source": plugin()})
    assert written.ok and written.output["path"] == "plugins/genesis/word_count.py"
    assert host.client.call("AID.GEN.WORDS.v1", {"text": "x"}).status == toolapi.UNKNOWN_TOOL  # quarantined
    checked = genesis(host, "COMPILE_SHARED", {"name": "word_count"})
    assert checked.ok, checked
    assert checked.output["aid"] == "AID.GEN.WORDS.v1" and checked.output["test_output"] == {"words": 3}
    assert host.client.call("AID.GEN.WORDS.v1", {"text": "x"}).status == toolapi.UNKNOWN_TOOL  # not loaded yet
    loaded = genesis(host, "LOAD_PLUGIN", {"name": "word_count"})
    assert loaded.ok and loaded.output["sha256"] == written.output["sha256"] == checked.output["sha256"]
    pins = json.loads(Path(host.root, "plugins", "pins.json").read_text())["pins"]
    assert pins == {"word_count.py": written.output["sha256"]}
    tool = {t["aid"]: t for t in host.client.list_tools()}["AID.GEN.WORDS.v1"]
    assert (tool["plugin"], tool["tier"]) == ("word_count.py", 0)
    ran = host.client.call("AID.GEN.WORDS.v1", {"text": "one two three four"})
    assert ran.ok and ran.output == {"words": 4}
    again = genesis(host, "LOAD_PLUGIN", {"name": "word_count"})
    assert again.status == toolapi.TOOL_ERROR and "already implemented" in again.error


@needs_bwrap
def test_only_the_checked_bytes_are_loaded(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    assert create(host, "swap", plugin("AID.GEN.SWAP.v1")).ok
    Path(host.root, "plugins", "genesis", "swap.py").write_text(plugin("AID.GEN.SWAP.v1", body="EVIL = 1"))
    refused = genesis(host, "LOAD_PLUGIN", {"name": "swap"})
    assert refused.status == toolapi.TOOL_ERROR and "changed since it was compiled" in refused.error
    rewritten = genesis(host, "WRITE_FILE", {"name": "swap", "source": plugin("AID.GEN.SWAP.v1", body="X = 2")})
    assert rewritten.ok
    unchecked = genesis(host, "LOAD_PLUGIN", {"name": "swap"})
    assert unchecked.status == toolapi.TOOL_ERROR and "has not passed" in unchecked.error
    assert not Path(host.root, "plugins", "swap.py").exists()
    never = genesis(host, "LOAD_PLUGIN", {"name": "never_written"})
    assert never.status == toolapi.TOOL_ERROR and "write it with AID.GENESIS.WRITE_FILE.v1 first" in never.error


COMPILE_REFUSALS = [
    ("syntax", "def run(:\n", "does not compile"),
    ("no_test", plugin().replace("MACHINA_GENESIS_TEST", "OTHER"), "no acceptance test"),
    ("bad_test", plugin(test='{"inputs": {"text": "a"}, "expect": {"words": 9}}'), "expected {'words': 9}"),
    ("bad_inputs", plugin(test='{"inputs": {"txt": "a"}}'), "inputs break its inputs_schema"),
    ("net", plugin(caps='["NETWORK"]'), "beyond MACHINA_PLUGIN_ALLOWED_CAPS"),
    ("all_caps", plugin().replace('    "capabilities": [],\n', ""), "no capabilities declared means all"),
    ("noop", plugin("AID.NOOP.v1"), "AID.NOOP.v1 is already implemented"),
    ("crash", plugin(body="re = None  # run() then fails in its sandbox"), "did not pass (tool_error"),
]


@needs_bwrap
@pytest.mark.parametrize(("name", "source", "message"), COMPILE_REFUSALS, ids=[c[0] for c in COMPILE_REFUSALS])
def test_compile_refusals(toolhost: Start, name: str, source: str, message: str) -> None:
    host = toolhost(**OPEN)  # a fresh toolhost each: the breaker would stop the fourth
    reply = create(host, name, source)
    assert reply.status == toolapi.TOOL_ERROR and message in reply.error, reply
    assert not Path(host.root, "plugins", name + ".py").exists()
    assert not Path(host.root, "plugins", "genesis", name + ".checked.json").exists()


@needs_bwrap
def test_the_guard_refuses_imports_beyond_the_capabilities(toolhost: Start) -> None:
    host = toolhost(**OPEN, MACHINA_GENESIS_GUARD="1", MACHINA_PLUGIN_ALLOWED_CAPS="FILE_READ,MEMORY,NETWORK")
    sock = create(host, "sock", plugin(body="import socket"))
    assert sock.status == toolapi.TOOL_ERROR and "import of socket needs the NETWORK capability" in sock.error
    ctypes = create(host, "ctypes_use", plugin(caps='["NETWORK"]', body="import ctypes"))
    assert ctypes.status == toolapi.TOOL_ERROR and "import of ctypes is not allowed" in ctypes.error
    allowed = create(host, "with_net", plugin("AID.GEN.NET.v1", caps='["NETWORK"]', body="import socket"))
    assert allowed.ok, allowed


@needs_bwrap
def test_the_missing_tool_path_a_plugin_provides_a_declared_tool(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    aid = "AID.DEMO.MISSING_TOOL.v1"
    assert host.client.call(aid, {"text": "a b"}).status == toolapi.UNKNOWN_TOOL
    assert create(host, "missing_tool", plugin(aid)).ok
    assert genesis(host, "LOAD_PLUGIN", {"name": "missing_tool"}).ok
    reply = host.client.call(aid, {"text": "a b"})
    assert reply.ok and reply.output == {"words": 2}
    (entry,) = [t for t in host.client.list_tools() if t["aid"] == aid]
    assert entry["plugin"] == "missing_tool.py" and "implemented" not in entry


@needs_bwrap
def test_the_breaker_stops_repeated_failures(toolhost: Start) -> None:
    host = toolhost(**OPEN)
    for i in range(3):
        assert create(host, f"broken{i}", "def run(:\n").status == toolapi.TOOL_ERROR
    paused = genesis(host, "WRITE_FILE", {"name": "later", "source": plugin()})
    assert paused.status == toolapi.TOOL_ERROR and "paused after repeated failures" in paused.error


def test_the_breaker_cools_down() -> None:
    clock = FakeClock()
    breaker = Breaker(clock, 3, 300.0, 600.0)
    breaker.failed()
    clock.advance(301)  # the first failure leaves the window
    breaker.failed()
    breaker.failed()
    breaker.check()  # two in the window: still closed
    breaker.failed()
    with pytest.raises(ToolFailure, match="600 s of cooldown left"):
        breaker.check()
    clock.advance(599)
    with pytest.raises(ToolFailure, match="1 s of cooldown left"):
        breaker.check()
    clock.advance(1)
    breaker.check()


@needs_bwrap
def test_genesis_is_off_in_prod_and_capped_in_prod_mode(toolhost: Start) -> None:
    prod = toolhost(**OPEN, MACHINA_PROFILE="prod")
    reply = genesis(prod, "WRITE_FILE", {"name": "x", "source": plugin()})
    assert reply.status == toolapi.DENIED and "MACHINA_GENESIS_ENABLE=0" in reply.error
    assert genesis(prod, "LOAD_PLUGIN", {"name": "x"}).status == toolapi.DENIED
    capped = toolhost(**OPEN, MACHINA_GENESIS_PROD_MODE="1")
    big = genesis(capped, "WRITE_FILE", {"name": "big", "source": plugin(body="# " + "x" * 40000)})
    assert big.status == toolapi.TOOL_ERROR and "at most 32768" in big.error


@needs_bwrap
def test_tiers_and_approval(toolhost: Start) -> None:
    host = toolhost()
    tools = {t["aid"]: t for t in host.client.list_tools()}
    tiers = {step: tools[f"AID.GENESIS.{step}.v1"]["tier"] for step in ("WRITE_FILE", "COMPILE_SHARED", "LOAD_PLUGIN")}
    assert tiers == {"WRITE_FILE": 1, "COMPILE_SHARED": 3, "LOAD_PLUGIN": 3}
    assert genesis(host, "WRITE_FILE", {"name": "w", "source": plugin()}).ok
    for step in ("COMPILE_SHARED", "LOAD_PLUGIN"):
        assert genesis(host, step, {"name": "w"}).status == toolapi.APPROVAL_REQUIRED

"""The MCP bridge inside a real machina-toolhost, against real servers (SDK on stdio and HTTP, hand-written).

Every call goes over the toolhost's socket like an operator's or a worker's: the catalog, the manifest
check against the server's inputSchema, the permission mode and leases, then the bridge.
"""

from __future__ import annotations

import pytest

pytest.importorskip("mcp", reason="the MCP SDK (the mcp extra) is not installed: pip install -e '.[mcp]'")

import json
import os
from pathlib import Path

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from machina import toolapi
from machina.testing.mcp_server import RUG_PULL_DESCRIPTION, build_server, running_http_server
from machina.testing.toolhost import RunningToolhost
from machina.toolhost.client import ToolhostError

from .conftest import LEGACY_SERVER, PYTHON_EXE, SDK_SERVER, StartToolhost, server_status

SUITE_SECRET = "suite-secret-0123456789abcdef"  # test values only
SERVER_SECRET = "files-secret-abcdef0123456789"
RESULT_CAP = 64 * 1024


def aids(host: RunningToolhost) -> set[str]:
    return {tool["aid"] for tool in host.client.list_tools()}


def test_a_server_is_served_only_once_pinned_and_through_the_permission_rules(mcp_toolhost: StartToolhost) -> None:
    host = mcp_toolhost({"st": SDK_SERVER}, MACHINA_PERMISSION_OVERRIDES="", MACHINA_PERMISSION_MODE="standard")
    status = server_status(host, "st")
    assert (status["state"], status["pin"]) == ("ready", "unpinned")
    assert "AID.MCP.ST.ECHO.v1" not in aids(host)
    refused = host.client.call("AID.MCP.ST.ECHO.v1", {"text": "hi"})
    assert refused.status == toolapi.DENIED and "machina mcp pin st" in refused.error

    pinned = host.client.mcp_pin("st", status["digest"])
    assert pinned["pin"] == "pinned"
    listed = {tool["aid"]: tool for tool in host.client.list_tools()}
    echo = listed["AID.MCP.ST.ECHO.v1"]
    assert (echo["tier"], echo["path"], echo["permission"], echo["mcp_server"]) == (2, "mcp", "ask", "st")

    # tier 2 under "standard" asks: no lease, no call; a human's lease lets exactly one through
    asked = host.client.call("AID.MCP.ST.ECHO.v1", {"text": "hi"})
    assert asked.status == toolapi.APPROVAL_REQUIRED
    lease = host.client.issue_lease("AID.MCP.ST.ECHO.v1", 2, 60_000)
    reply = host.client.call("AID.MCP.ST.ECHO.v1", {"text": "hi"}, lease_token=lease["lease_token"])
    assert reply.status == toolapi.OK, reply.error
    assert reply.output["content"] == [{"type": "text", "text": "hi"}]
    # the inputs are checked against the server's inputSchema before anything reaches the server
    bad = host.client.call("AID.MCP.ST.ECHO.v1", {"text": 5}, lease_token=lease["lease_token"])
    assert bad.status == toolapi.INVALID_INPUT


def test_a_pin_for_other_definitions_is_refused(mcp_toolhost: StartToolhost) -> None:
    host = mcp_toolhost({"st": SDK_SERVER})
    with pytest.raises(ToolhostError, match="not the 0000000000000000 you reviewed"):
        host.client.mcp_pin("st", "0" * 64)
    with pytest.raises(ToolhostError, match="no MCP server 'nope'"):
        host.client.mcp_pin("nope")
    assert server_status(host, "st")["pin"] == "unpinned"


def test_hostile_stdio_server(mcp_toolhost: StartToolhost, tmp_path: Path) -> None:
    secrets_file = tmp_path / "machina.env"
    secrets_file.write_text(f"MACHINA_API_TOKEN={SUITE_SECRET}\n")
    server = {**SDK_SERVER, "env": {"FILES_TOKEN": "${FILES_TOKEN}"}}
    host = mcp_toolhost(
        {"st": server},
        MACHINA_API_TOKEN=SUITE_SECRET,
        TELEGRAM_BOT_TOKEN=SUITE_SECRET,
        FILES_TOKEN=SERVER_SECRET,
        MACHINA_MCP_TOOL_TIMEOUT_MS="3000",
        MACHINA_MCP_RESULT_MAX_BYTES=str(RESULT_CAP),
    )
    host.client.mcp_pin("st")
    assert server_status(host, "st")["protocol_version"] in MODERN_PROTOCOL_VERSIONS  # server/discover, no handshake

    # a server trying to read the suite's secrets: its environment is the sandbox's plus its own env
    snoop = host.client.call("AID.MCP.ST.SNOOP.v1", {"paths": [str(secrets_file), "/proc/self/environ"]})
    assert snoop.status == toolapi.OK, snoop.error
    seen = snoop.output["structured"]
    assert set(seen["environ"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD", "FILES_TOKEN"}
    assert seen["environ"]["FILES_TOKEN"] == SERVER_SECRET  # what mcp_servers.json gave it, nothing more
    assert SUITE_SECRET not in json.dumps(snoop.output)
    assert seen["files"][str(secrets_file)].startswith("unreadable")  # the host's files are not in its sandbox

    # a 10 MB result is cut to MACHINA_MCP_RESULT_MAX_BYTES
    big = host.client.call("AID.MCP.ST.BIG.v1", {"n": 10_000_000})
    assert big.status == toolapi.OK, big.error
    assert big.output["truncated"] is True and big.output["result_bytes"] > 10_000_000
    assert len(json.dumps(big.output)) <= RESULT_CAP + 1024

    # a hang past the timeout is cancelled; the server keeps serving
    hang = host.client.call("AID.MCP.ST.HANG.v1", {"seconds": 120})
    assert hang.status == toolapi.TIMEOUT and "within 3s" in hang.error
    assert host.client.call("AID.MCP.ST.ECHO.v1", {"text": "still here"}).status == toolapi.OK

    # a crash mid-call is a tool error, the server shows as failed, a reload starts it again
    crash = host.client.call("AID.MCP.ST.CRASH.v1", {})
    assert crash.status == toolapi.TOOL_ERROR and "connection ended" in crash.error
    assert server_status(host, "st")["state"] == "failed"
    host.client.mcp_reload()
    assert host.client.call("AID.MCP.ST.ECHO.v1", {"text": "back"}).status == toolapi.OK
    assert SUITE_SECRET not in host.log() and SERVER_SECRET not in host.log()


def test_changed_definitions_disable_the_server_until_pinned_again(mcp_toolhost: StartToolhost) -> None:
    with running_http_server(build_server("web")) as url:
        host = mcp_toolhost(
            {"web": {"url": url, "headers": {"Authorization": "Bearer ${WEB_TOKEN}"}}}, WEB_TOKEN="web-token-value"
        )
        status = server_status(host, "web")
        assert status["state"] == "ready" and status["protocol_version"]
        host.client.mcp_pin("web")
        assert host.client.call("AID.MCP.WEB.ECHO.v1", {"text": "a"}).status == toolapi.OK

        assert host.client.call("AID.MCP.WEB.RUG_PULL.v1", {}).status == toolapi.OK
        after = host.client.call("AID.MCP.WEB.ECHO.v1", {"text": "b"})
        assert after.status == toolapi.DENIED and "changed its tool definitions" in after.error
        assert not any(aid.startswith("AID.MCP.WEB.") for aid in aids(host))
        changed = server_status(host, "web")
        assert changed["pin"] == "changed" and changed["digest"] != changed["pinned_digest"]
        # the new description is shown for review, never obeyed
        assert RUG_PULL_DESCRIPTION in [tool["description"] for tool in changed["tools"]]

        host.client.mcp_pin("web", changed["digest"])
        assert host.client.call("AID.MCP.WEB.ECHO.v1", {"text": "c"}).status == toolapi.OK
        assert "web-token-value" not in host.log()


@pytest.mark.parametrize("transport", ["sse", "stateless", "json"])
def test_sse_stateless_and_json_http_servers(mcp_toolhost: StartToolhost, transport: str) -> None:
    server = build_server("web")
    shape = {"sse": transport == "sse", "stateless": transport == "stateless", "json_response": transport == "json"}
    with running_http_server(server, **shape) as url:
        entry = {"url": url, "transport": "sse"} if transport == "sse" else {"url": url}
        host = mcp_toolhost({"web": entry})
        assert server_status(host, "web")["state"] == "ready"
        host.client.mcp_pin("web")
        reply = host.client.call("AID.MCP.WEB.ECHO.v1", {"text": transport})
        assert reply.status == toolapi.OK, reply.error
        assert reply.output["content"][0]["text"] == transport


def test_legacy_handshake_and_duplicate_names(mcp_toolhost: StartToolhost) -> None:
    host = mcp_toolhost({"old": LEGACY_SERVER})
    host.client.mcp_pin("old")
    status = server_status(host, "old")
    assert status["protocol_version"] == "2024-11-05"
    refused = {tool["aid"] for tool in status["refused_tools"]}
    assert refused == {"AID.MCP.OLD.DUP.v1", "AID.MCP.OLD.GET_X.v1"}
    assert "AID.MCP.OLD.HELLO.v1" in aids(host) and not refused & aids(host)
    assert host.client.call("AID.MCP.OLD.HELLO.v1", {"name": "bob"}).output["content"][0]["text"] == "hello: hello bob"
    dup = host.client.call("AID.MCP.OLD.DUP.v1", {})
    assert dup.status == toolapi.DENIED and "all map to AID.MCP.OLD.DUP.v1" in dup.error


def test_commands_outside_the_allow_list_never_start(mcp_toolhost: StartToolhost, tmp_path: Path) -> None:
    disguised = tmp_path / "node"
    disguised.symlink_to("/bin/sh")
    host = mcp_toolhost(
        {
            "sh": {"command": "/bin/sh", "args": ["-c", "echo pwned"]},
            "fake": {"command": str(disguised)},
            "unset": {**SDK_SERVER, "env": {"TOKEN": "${MCP_TEST_UNSET_TOKEN}"}},
        },
        MACHINA_MCP_ALLOWED_COMMANDS=f"node,{PYTHON_EXE}",
    )
    for name in ("sh", "fake"):
        status = server_status(host, name)
        assert status["state"] == "refused" and "MACHINA_MCP_ALLOWED_COMMANDS" in status["error"]
    unset = server_status(host, "unset")
    assert unset["state"] == "refused" and "needs ${MCP_TEST_UNSET_TOKEN}, which is not set" in unset["error"]
    reply = host.client.call("AID.MCP.SH.ANYTHING.v1", {})
    assert reply.status == toolapi.DENIED and "does not start" in reply.error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"mcpServers": ', "not valid JSON"),
        (
            json.dumps({"mcpServers": {"x": {"command": "npx", "env": {"API_KEY": "literal-secret-1234"}}}}),
            "placeholder",
        ),
    ],
)
def test_a_bad_config_file_is_reported_and_serves_nothing(
    machina_root: Path, tmp_path: Path, text: str, expected: str
) -> None:
    from machina.testing.toolhost import running_toolhost

    config = tmp_path / "mcp_servers.json"
    config.write_text(text)
    with running_toolhost(str(machina_root), env={"MACHINA_MCP_CONFIG": str(config)}) as host:
        status = host.client.mcp_status()
        assert expected in status["config_error"] and status["servers"] == []
        assert "literal-secret-1234" not in status["config_error"] + host.log()
        assert "Traceback" not in host.log()
        assert host.client.call("AID.NOOP.v1", {}).status == toolapi.OK  # the other tools are unaffected
    assert os.path.exists(config)


def test_sighup_reads_the_config_again(mcp_toolhost: StartToolhost, tmp_path: Path) -> None:
    """``systemctl reload`` (ExecReload sends SIGHUP): a server added to mcp_servers.json starts, the toolhost
    keeps serving, and the process is the same one."""
    import signal
    import time

    from .conftest import write_config

    host = mcp_toolhost({})
    assert host.client.mcp_status()["servers"] == []
    write_config(tmp_path / "mcp_servers.json", {"st": SDK_SERVER})
    os.kill(host.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while not [s for s in host.client.mcp_status()["servers"] if s["state"] == "ready"]:
        assert host.proc.poll() is None, host.log()
        assert time.monotonic() < deadline, host.client.mcp_status()
        time.sleep(0.1)
    assert "SIGHUP: reloading the MCP servers" in host.log()
    assert host.client.call("AID.NOOP.v1", {}).status == toolapi.OK

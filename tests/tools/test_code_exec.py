"""AID.CODE.EXEC.v1 through a real toolhost: Python and sh in a fresh sandbox, limits, auto-fix, the network
lease, the permission tier, and the toolhost's escape suite."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from ..toolhost.escapes import ATTEMPTS, POOL_ONLY, Attempt, as_program
from .conftest import SECRET_A, SECRET_B, needs_bwrap, tcp_server

pytestmark = needs_bwrap
Start = Callable[..., RunningToolhost]
AID = "AID.CODE.EXEC.v1"
OPEN = {"MACHINA_PERMISSION_MODE": "open"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    root = tmp_path_factory.mktemp("code") / "root"
    init_root(str(root))
    (root / "data").mkdir()
    (root / "data" / "app.log").write_text("ERROR one\n")
    env = {**OPEN, "MACHINA_SHELL_STDOUT_MAX": "1000", "MACHINA_CODE_TIMEOUT": "20"}
    with running_toolhost(str(root), env=env) as host:
        yield host


def test_python_runs_in_the_shape_the_autonomic_engine_sends(shared: RunningToolhost) -> None:
    reply = shared.client.call(AID, {"lang": "python", "code": "import sys\nprint(sum(range(10)), sys.flags.isolated)"})
    assert reply.ok, reply
    assert reply.output["stdout"] == "45 1\n" and reply.output["exit_code"] == 0 and "autofix" not in reply.output


def test_stdin_sh_and_a_failing_exit(shared: RunningToolhost) -> None:
    echoed = shared.client.call(AID, {"code": "print(input()[::-1])", "stdin": "abc\n"})
    assert echoed.ok and echoed.output["stdout"] == "cba\n"
    shell = shared.client.call(AID, {"lang": "sh", "code": "echo $((6*7)); echo to-err >&2"})
    assert shell.ok and shell.output["stdout"] == "42\n" and shell.output["stderr"] == "to-err\n"
    failed = shared.client.call(AID, {"code": "raise SystemExit(3)"})
    assert failed.status == toolapi.TOOL_ERROR and failed.output["exit_code"] == 3
    assert "exited with status 3" in failed.error


def test_output_is_capped(shared: RunningToolhost) -> None:
    reply = shared.client.call(AID, {"code": "print('x' * 5000)"})
    assert reply.ok and len(reply.output["stdout"]) == 1000 and reply.output["truncated"]
    lower = shared.client.call(AID, {"code": "print('x' * 5000)", "stdout_max": 10, "stderr_max": 10**9})
    assert len(lower.output["stdout"]) == 10


def test_autofix_runs_the_fixed_code_and_returns_the_diff(shared: RunningToolhost) -> None:
    reply = shared.client.call(AID, {"code": "```python\nx = 2\nif x > 1\n    print 'big', x\n```"})
    assert reply.ok, reply
    assert reply.output["stdout"] == "big 2\n"
    fix = reply.output["autofix"]
    assert fix["layers"] == ["fence", "colon", "print"] and fix["compiles"]
    assert "-```python\n" in fix["diff"] and "-if x > 1\n" in fix["diff"] and "+if x > 1:\n" in fix["diff"]
    assert "+    print('big', x)\n" in fix["diff"]


def test_code_that_does_not_compile_is_not_run(shared: RunningToolhost) -> None:
    unfixable = shared.client.call(AID, {"code": "Here is the code you asked for:"})
    assert unfixable.status == toolapi.TOOL_ERROR and "does not compile" in unfixable.error
    assert "exit_code" not in unfixable.output and unfixable.output["autofix"]["compiles"] is False
    refused = shared.client.call(AID, {"code": "if True\n    print(1)", "autofix": False})
    assert refused.status == toolapi.TOOL_ERROR and "expected ':'" in refused.output["stderr"]


def test_bad_inputs_are_refused_before_anything_runs(shared: RunningToolhost) -> None:
    for inputs in ({}, {"code": ""}, {"code": "1", "lang": "ruby"}, {"code": "1", "env": {"A": "b"}}):
        assert shared.client.call(AID, inputs).status == toolapi.INVALID_INPUT, inputs
    assert shared.client.call(AID, {"code": "x" * 100_001}).status == toolapi.INVALID_INPUT
    nul = shared.client.call(AID, {"code": "print(1)\x00"})
    assert nul.status == toolapi.TOOL_ERROR and "NUL" in nul.error


def test_the_sandbox_shows_no_working_root_and_no_network(shared: RunningToolhost) -> None:
    program = (
        "import json, os, socket\n"
        "out = {'cwd': os.getcwd(), 'root': os.path.exists(ROOT), 'env': sorted(os.environ)}\n"
        "try:\n    socket.create_connection(('127.0.0.1', PORT), timeout=2)\n    out['net'] = 'connected'\n"
        "except OSError as exc:\n    out['net'] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    with tcp_server() as (port, seen):
        source = program.replace("ROOT", repr(shared.root)).replace("PORT", str(port))
        reply = shared.client.call(AID, {"code": source})
        assert reply.ok, reply
        out = json.loads(reply.output["stdout"])
        assert out["cwd"] == "/tmp" and out["root"] is False and out["net"] != "connected" and seen == []
        assert set(out["env"]) <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE", "PWD"}


def test_network_needs_a_lease_even_in_open_mode(shared: RunningToolhost) -> None:
    with tcp_server() as (port, seen):
        inputs = {
            "code": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'hi')",
            "network": True,
        }
        refused = shared.client.call(AID, inputs)
        assert refused.status == toolapi.APPROVAL_REQUIRED and "net profile" in refused.error
        assert seen == []
        token = shared.client.issue_lease(AID, 3, 60_000, inputs=inputs)["lease_token"]
        reply = shared.client.call(AID, inputs, lease_token=token)
        assert reply.ok, reply
        assert seen == [b"hi"]
        again = shared.client.call(AID, inputs, lease_token=token)  # single use
        assert again.status == toolapi.APPROVAL_REQUIRED


def test_the_wall_clock_limit_kills_the_code(toolhost: Start) -> None:
    client = toolhost(**OPEN, MACHINA_CODE_TIMEOUT="1").client
    reply = client.call(AID, {"code": "import time\nwhile True: time.sleep(0.05)", "timeout_ms": 600000})
    assert reply.status == toolapi.TIMEOUT and reply.output["timed_out"] is True
    assert "ran past 1000 ms" in reply.error


def test_code_is_tier_3_and_asks_in_standard_mode(toolhost: Start) -> None:
    host = toolhost()
    tools = {t["aid"]: t for t in host.client.list_tools()}
    assert (tools[AID]["tier"], tools[AID]["path"], tools[AID]["permission"]) == (3, "code", "ask")
    reply = host.client.call(AID, {"code": "print(1)"})
    assert reply.status == toolapi.APPROVAL_REQUIRED


# --- the escape suite, with the prod sandbox settings ------------------------------------------------------


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if a.name not in POOL_ONLY], ids=lambda a: a.name)
def test_escape_fails_in_code_exec(attempt: Attempt, prod_host: RunningToolhost, loopback_port: int) -> None:
    constants = {
        "ROOT": prod_host.root,
        "PORT": loopback_port,
        "TOOLHOST_SOCKET": prod_host.socket_path,
        "SECRET_A": SECRET_A,
        "SECRET_B": SECRET_B,
    }
    reply = prod_host.client.call(AID, {"code": as_program(attempt, constants)})
    assert reply.status == toolapi.OK, f"{reply.status}: {reply.error} {reply.output.get('stderr', '')}"
    result = json.loads(reply.output["stdout"])
    assert result["escaped"] is False, f"{attempt.name} ESCAPED: {result['detail']}"
    assert re.search(attempt.blocked_by, result["detail"]), f"{attempt.name}: unexpected {result['detail']!r}"


def test_the_fixture_root_is_real(prod_host: RunningToolhost) -> None:
    assert Path(prod_host.root, "queue").is_dir()  # ROOT in the attempts names a directory that exists

"""AID.UTIL.SAVE/UPDATE/RUN/LIST/DELETE.v1 through a real toolhost: pinned code, runs only in the sandbox,
refusals that change nothing, and the toolhost's escape suite through UTIL.RUN."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from ..toolhost.escapes import ATTEMPTS, POOL_ONLY, Attempt, as_program
from .conftest import SECRET_A, SECRET_B, needs_bwrap

pytestmark = needs_bwrap
GREET = "import sys\nprint('hello', *sys.argv[1:], input())"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    root = tmp_path_factory.mktemp("util") / "root"
    init_root(str(root))
    with running_toolhost(str(root), env={"MACHINA_PERMISSION_MODE": "open"}) as running:
        yield running


def call(host: RunningToolhost, what: str, inputs: dict[str, object]) -> toolapi.ToolReply:
    return host.client.call(f"AID.UTIL.{what}.v1", inputs)


def test_save_run_update_list_delete(host: RunningToolhost) -> None:
    saved = call(host, "SAVE", {"name": "greet", "code": GREET, "description": "says hello"})
    assert saved.ok and saved.output["pinned"] and len(saved.output["sha256"]) == 64
    ran = call(host, "RUN", {"name": "greet", "args": ["a", "b"], "stdin": "c\n"})
    assert ran.ok and ran.output["stdout"] == "hello a b c\n" and ran.output["sha256"] == saved.output["sha256"]
    updated = call(host, "UPDATE", {"name": "greet", "code": "echo hi $1", "lang": "sh"})
    assert updated.ok and updated.output["sha256"] != saved.output["sha256"]
    assert call(host, "RUN", {"name": "greet", "args": ["you"]}).output["stdout"] == "hi you\n"
    listed = call(host, "LIST", {})
    (row,) = [u for u in listed.output["utilities"] if u["name"] == "greet"]
    assert row["lang"] == "sh" and row["description"] == "says hello" and row["pinned"] is True
    deleted = call(host, "DELETE", {"name": "greet"})
    assert deleted.ok and deleted.output["kept_as"].startswith("state/trash/utilities/")
    assert json.loads(Path(host.root, deleted.output["kept_as"]).read_text())["code"] == "echo hi $1"
    gone = call(host, "RUN", {"name": "greet"})
    assert gone.status == toolapi.TOOL_ERROR and "no utility 'greet'" in gone.error


def test_a_utility_changed_behind_the_toolhost_does_not_run(host: RunningToolhost) -> None:
    assert call(host, "SAVE", {"name": "tampered", "code": "print('approved')"}).ok
    record_path = Path(host.root, "state", "utilities", "tampered.json")
    record = json.loads(record_path.read_text())
    record["code"] = "print('swapped in')"
    record_path.write_text(json.dumps(record))
    reply = call(host, "RUN", {"name": "tampered"})
    assert (
        reply.status == toolapi.TOOL_ERROR and "does not match its pin" in reply.error and "stdout" not in reply.output
    )
    row = next(u for u in call(host, "LIST", {}).output["utilities"] if u["name"] == "tampered")
    assert row["pinned"] is False


def test_run_checks_the_sha256_the_caller_reviewed(host: RunningToolhost) -> None:
    sha = call(host, "SAVE", {"name": "reviewed", "code": "print(1)"}).output["sha256"]
    assert call(host, "RUN", {"name": "reviewed", "sha256": sha.upper()}).ok
    other = call(host, "RUN", {"name": "reviewed", "sha256": "0" * 64})
    assert other.status == toolapi.TOOL_ERROR and "not the sha256 asked for" in other.error


def test_refusals_change_nothing(host: RunningToolhost) -> None:
    assert call(host, "SAVE", {"name": "kept", "code": "print('v1')"}).ok
    again = call(host, "SAVE", {"name": "kept", "code": "print('v2')"})
    assert again.status == toolapi.TOOL_ERROR and "UTIL.UPDATE" in again.error
    broken = call(host, "UPDATE", {"name": "kept", "code": "if True print(1)"})
    assert broken.status == toolapi.TOOL_ERROR and "does not compile" in broken.error
    assert call(host, "RUN", {"name": "kept"}).output["stdout"] == "v1\n"
    assert call(host, "UPDATE", {"name": "missing", "code": "print(1)"}).status == toolapi.TOOL_ERROR
    for inputs in ({"name": "../evil", "code": "1"}, {"name": "Upper", "code": "1"}, {"name": "x", "code": ""}):
        assert call(host, "SAVE", inputs).status == toolapi.INVALID_INPUT, inputs
    assert call(host, "UPDATE", {"name": "kept"}).status == toolapi.INVALID_INPUT  # nothing to change


def test_a_utility_runs_in_the_sandbox_and_fails_clearly(host: RunningToolhost) -> None:
    probe = "import os, json\nprint(json.dumps([os.getcwd(), os.path.exists(ROOT)]))".replace("ROOT", repr(host.root))
    assert call(host, "SAVE", {"name": "probe", "code": probe}).ok
    assert json.loads(call(host, "RUN", {"name": "probe"}).output["stdout"]) == ["/tmp", False]
    assert call(host, "SAVE", {"name": "fails", "code": "raise SystemExit(4)"}).ok
    failed = call(host, "RUN", {"name": "fails"})
    assert failed.status == toolapi.TOOL_ERROR and failed.output["exit_code"] == 4


def test_tiers(host: RunningToolhost) -> None:
    tools = {t["aid"]: t for t in host.client.list_tools()}
    tiers = {name: tools[f"AID.UTIL.{name}.v1"]["tier"] for name in ("SAVE", "UPDATE", "RUN", "LIST", "DELETE")}
    assert tiers == {"SAVE": 2, "UPDATE": 2, "RUN": 2, "LIST": 0, "DELETE": 1}
    assert tools["AID.UTIL.RUN.v1"]["path"] == "code" and tools["AID.UTIL.SAVE.v1"]["path"] == "util"


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if a.name not in POOL_ONLY], ids=lambda a: a.name)
def test_escape_fails_in_util_run(attempt: Attempt, prod_host: RunningToolhost, loopback_port: int) -> None:
    constants = {
        "ROOT": prod_host.root,
        "PORT": loopback_port,
        "TOOLHOST_SOCKET": prod_host.socket_path,
        "SECRET_A": SECRET_A,
        "SECRET_B": SECRET_B,
    }
    name = "escape_" + attempt.name.lower()
    saved = prod_host.client.call("AID.UTIL.SAVE.v1", {"name": name, "code": as_program(attempt, constants)})
    assert saved.ok, saved
    reply = prod_host.client.call("AID.UTIL.RUN.v1", {"name": name})
    assert reply.status == toolapi.OK, f"{reply.status}: {reply.error} {reply.output.get('stderr', '')}"
    result = json.loads(reply.output["stdout"])
    assert result["escaped"] is False, f"{attempt.name} ESCAPED: {result['detail']}"
    assert re.search(attempt.blocked_by, result["detail"]), f"{attempt.name}: unexpected {result['detail']!r}"

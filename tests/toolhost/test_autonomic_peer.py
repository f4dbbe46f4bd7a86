"""The autonomic peer: MACHINA_AUTONOMIC_* may answer an "ask" for it, and for no one else (AGENT.md fault 1).

The engine is told apart by its uid (SO_PEERCRED), so these tests run a real client as a uid of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import config
from machina.testing.toolhost import running_toolhost

from .conftest import needs_bwrap

switches_uid = pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as another uid (needs root to switch)")
ENGINE_UID = 64_055  # an unused uid standing in for the engine's own system user (not 65534: see D5)
ASK_NOOP = {"MACHINA_PERMISSION_OVERRIDES": "AID.NOOP.v1=ask"}  # a tier-0 tool that asks
SUPERVISED = {"MACHINA_PERMISSION_MODE": "supervised"}  # tier 3 (SHELL.EXEC) asks too


@pytest.fixture
def socket_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="machina-autonomic-peer-")
    os.chmod(path, 0o755)  # pytest's own tmp directories are private to root
    yield path
    shutil.rmtree(path, ignore_errors=True)


def call_as(uid: int, socket_path: str, aid: str, inputs: dict) -> dict:
    """One tool call from a process of ``uid`` (the system python: no Machina import needed)."""
    program = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb', buffering=0)\n"
        "f.write(sys.argv[2].encode() + b'\\n'); print(f.readline().decode().strip())\n"
    )
    request = json.dumps({"aid": aid, "inputs": inputs})
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", program, socket_path, request],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start(root: Path, socket_dir: str, **env: str):  # type: ignore[no-untyped-def]
    path = os.path.join(socket_dir, "toolhost.sock")
    return running_toolhost(str(root), env={"MACHINA_AUTONOMIC_UIDS": str(ENGINE_UID), **env}, socket_path=path)


@needs_bwrap
@switches_uid
def test_an_ask_stays_an_ask_for_the_engine_by_default(machina_root: Path, socket_dir: str) -> None:
    with start(machina_root, socket_dir, **ASK_NOOP) as host:
        os.chmod(host.socket_path, 0o666)
        reply = call_as(ENGINE_UID, host.socket_path, "AID.NOOP.v1", {})
        assert reply["status"] == "approval_required", reply


@needs_bwrap
@switches_uid
def test_listed_aids_are_approved_for_the_engine_only(machina_root: Path, socket_dir: str) -> None:
    env = {**ASK_NOOP, "MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS": "AID.NOOP.v1"}
    with start(machina_root, socket_dir, **env) as host:
        os.chmod(host.socket_path, 0o666)
        assert call_as(ENGINE_UID, host.socket_path, "AID.NOOP.v1", {})["status"] == "ok"
        assert host.client.call("AID.NOOP.v1", {}).status == "approval_required"  # root is not the engine
        assert "answered by MACHINA_AUTONOMIC_" in host.log()


@needs_bwrap
@switches_uid
def test_approve_all_never_reaches_tier_3(machina_root: Path, socket_dir: str) -> None:
    env = {**SUPERVISED, "MACHINA_AUTONOMIC_APPROVE_ALL_ASK": "1", "MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS": "*"}
    with start(machina_root, socket_dir, **env) as host:
        os.chmod(host.socket_path, 0o666)
        shell = call_as(ENGINE_UID, host.socket_path, "AID.SHELL.EXEC.v1", {"cmd": ["true"]})
        assert shell["status"] == "approval_required" and "tier 3" in shell["error"], shell


@needs_bwrap
@switches_uid
def test_approve_all_does_not_replace_an_enforced_lease(machina_root: Path, socket_dir: str) -> None:
    env = {**ASK_NOOP, "MACHINA_AUTONOMIC_APPROVE_ALL_ASK": "1", "MACHINA_LEASE_ENFORCE": "1", **SUPERVISED}
    with start(machina_root, socket_dir, **env) as host:
        os.chmod(host.socket_path, 0o666)
        assert call_as(ENGINE_UID, host.socket_path, "AID.NOOP.v1", {})["status"] == "ok"  # tier 0: no lease
        write = call_as(ENGINE_UID, host.socket_path, "AID.FILE.WRITE.v1", {"path": "data/x.txt", "content": "x"})
        assert write["status"] == "lease_required", write


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MACHINA_PROFILE": "prod", "MACHINA_AUTONOMIC_APPROVE_ALL_ASK": "1"}, "refused under MACHINA_PROFILE=prod"),
        ({"MACHINA_AUTONOMIC_UIDS": "0"}, "MACHINA_AUTONOMIC_UIDS lists 0"),
    ],
)
def test_unsafe_autonomic_approval_settings_are_configuration_errors(env: dict, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load({"MACHINA_ENV_FILE": "/dev/null", **env})

"""machina-toolhost as a process on a real socket: peers, leases, modes, idempotency, bad requests, start-up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.exitcodes import ExitCode
from machina.ipc.jsonlines import ServiceUnavailable
from machina.testing.activation import socket_activated
from machina.testing.toolhost import RunningToolhost, running_toolhost, toolhost_command
from machina.toolhost.client import ToolhostClient, ToolhostError
from machina.toolhost.leases import inputs_digest

from ..conftest import bin_env
from .conftest import needs_bwrap

pytestmark = needs_bwrap
Start = Callable[..., RunningToolhost]
PEER = 64056  # a second, ordinary uid: 65534 is refused in *_ALLOWED_UIDS (the overflow uid, D5)


def raw(host: RunningToolhost, line: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(host.socket_path)
        sock.sendall(line)
        return json.loads(sock.makefile("rb").readline())


# --- requests ------------------------------------------------------------------------------------------------


def test_bad_requests_get_clear_replies(toolhost: Start) -> None:
    host = toolhost()
    assert raw(host, b"{not json\n")["status"] == "bad_request"
    assert raw(host, b"[1, 2]\n")["status"] == "bad_request"
    assert raw(host, b'{"op": "_frobnicate"}\n')["error"].startswith("unknown op '_frobnicate'")
    assert raw(host, b'{"inputs": {}}\n')["error"] == "aid must be a non-empty string"
    assert raw(host, b'{"aid": "AID.NOOP.v1", "inputs": []}\n')["error"] == "inputs must be a JSON object"
    assert raw(host, b'{"aid": "AID.NOOP.v1", "request_id": ""}\n')["status"] == "bad_request"
    # D9: a number too large to be finite, NaN and duplicate keys have no single reading: refused
    for line in (b'{"aid": "AID.NOOP.v1", "inputs": {"n": 1e400}}\n', b'{"aid": "AID.NOOP.v1", "aid": "x"}\n'):
        assert raw(host, line)["status"] == "bad_request"
    assert "out of range" in raw(host, b'{"aid": "AID.NOOP.v1", "inputs": {"n": 1e400}}\n')["error"]
    reply = host.client.call("AID.FILE.READ.v1", {"path": 7, "extra": True})
    assert reply.status == toolapi.INVALID_INPUT
    assert "inputs: Additional properties are not allowed ('extra' was unexpected)" in reply.error
    assert "path: 7 is not of type 'string'" in reply.error
    assert host.client.call("AID.NOPE.v1", {}).status == toolapi.UNKNOWN_TOOL
    assert host.client.ping()["pid"] == host.pid  # still serving after all of that


def test_tools_list_names_every_tool_with_tier_path_and_permission(toolhost: Start) -> None:
    tools = {t["aid"]: t for t in toolhost().client.list_tools()}
    assert len(tools) == 36
    assert (tools["AID.SHELL.EXEC.v1"]["tier"], tools["AID.SHELL.EXEC.v1"]["path"]) == (3, "shell")
    assert (tools["AID.SHELL.EXEC.v1"]["permission"], tools["AID.FILE.READ.v1"]["permission"]) == ("ask", "allow")
    assert tools["AID.NET.HTTP_GET.v1"]["path"] == "pool" and tools["AID.GPU_SMOKE.v1"]["path"] == "fresh"
    assert tools["AID.FILE.WRITE.v1"]["inputs_schema"]["required"] == ["path", "content"]


def test_one_client_is_safe_to_share_between_threads(toolhost: Start) -> None:
    client = toolhost().new_client()
    errors: list[object] = []

    def work(n: int) -> None:
        for i in range(15):
            reply = client.call("AID.ASK_SUP.v1", {"question": f"{n}-{i}"})
            if not reply.ok or reply.output["question"] != f"{n}-{i}":
                errors.append(reply)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --- peers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def shared_socket_dir() -> Iterator[str]:
    """A directory another uid can reach (pytest's tmp directories are private to root)."""
    path = tempfile.mkdtemp(prefix="machina-toolhost-test-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_peer(socket_path: str, *requests: dict) -> list[dict]:
    """Send requests from a process running as uid PEER (the system python: no Machina import needed)."""
    program = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb', buffering=0)\n"
        "for line in sys.argv[2:]:\n"
        "    try:\n"
        "        f.write(line.encode() + b'\\n')\n"
        "    except OSError:\n"
        "        pass  # a refusing server may have answered and closed before we wrote\n"
        "    try:\n"
        "        reply = f.readline()\n"
        "    except OSError:\n"
        "        reply = b''\n"
        "    print(reply.decode().strip() if reply else '{\"closed\": true}')\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", program, socket_path, *map(json.dumps, requests)],
        user=PEER,
        group=PEER,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as another uid")
def test_a_peer_of_another_uid_is_refused(machina_root: Path, shared_socket_dir: str) -> None:
    path = os.path.join(shared_socket_dir, "toolhost.sock")
    with running_toolhost(str(machina_root), socket_path=path) as host:
        os.chmod(path, 0o666)  # the socket's mode is not what keeps this peer out: SO_PEERCRED is
        replies = as_peer(path, {"aid": "AID.NOOP.v1", "inputs": {}}, {"op": "_ping"})
        assert replies[0]["status"] == "forbidden" and f"peer uid {PEER} is not allowed" in replies[0]["error"]
        assert replies[1] == {"closed": True}
        assert "refused peer" in host.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as another uid")
def test_an_allowed_peer_may_call_tools_but_not_issue_leases(machina_root: Path, shared_socket_dir: str) -> None:
    path = os.path.join(shared_socket_dir, "toolhost.sock")
    env = {"MACHINA_TOOLHOST_ALLOWED_UIDS": str(PEER)}
    with running_toolhost(str(machina_root), env=env, socket_path=path) as host:
        os.chmod(path, 0o666)
        call, issue, gc = as_peer(
            path,
            {"aid": "AID.NOOP.v1", "inputs": {}},
            {"op": "_lease.issue", "aid": "*", "tier": 3, "ttl_ms": 60000},
            {"aid": "_lease.gc"},
        )
        assert call["status"] == "ok"
        assert issue["status"] == "forbidden" and "only for administrative peers" in issue["error"]
        assert gc["status"] == "forbidden"
        assert host.client.issue_lease("*", 3, 60_000)["lease_token"].startswith("mlease_")  # root is admin


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as another uid")
def test_a_configured_admin_uid_may_issue_leases(machina_root: Path, shared_socket_dir: str) -> None:
    path = os.path.join(shared_socket_dir, "toolhost.sock")
    env = {"MACHINA_TOOLHOST_ALLOWED_UIDS": str(PEER), "MACHINA_TOOLHOST_ADMIN_UIDS": str(PEER)}
    with running_toolhost(str(machina_root), env=env, socket_path=path) as host:
        os.chmod(path, 0o666)
        (issued,) = as_peer(path, {"op": "_lease.issue", "aid": "AID.SHELL.EXEC.v1", "tier": 3, "ttl_ms": 60000})
        assert issued["status"] == "ok" and issued["output"]["issued_by"] == PEER
        reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["true"]}, lease_token=issued["output"]["lease_token"])
        assert reply.ok


# --- leases and modes ----------------------------------------------------------------------------------------


def test_lease_matrix(toolhost: Start) -> None:
    host = toolhost()  # standard mode: SHELL.EXEC (tier 3) asks
    client = host.client
    shell = ("AID.SHELL.EXEC.v1", {"cmd": ["echo", "approved"]})

    missing = client.call(*shell)
    assert missing.status == toolapi.APPROVAL_REQUIRED and "needs a lease" in missing.error

    token = client.issue_lease("AID.SHELL.EXEC.v1", 3, 60_000)["lease_token"]
    assert client.call(*shell, lease_token=token).output["stdout"] == "approved\n"
    reused = client.call(*shell, lease_token=token)
    assert reused.status == toolapi.APPROVAL_REQUIRED and "unknown or already used" in reused.error

    other = client.issue_lease("AID.FILE.WRITE.v1", 1, 60_000)["lease_token"]
    wrong_tool = client.call(*shell, lease_token=other)
    assert wrong_tool.status == toolapi.APPROVAL_REQUIRED and "lease is for AID.FILE.WRITE.v1" in wrong_tool.error

    short = client.issue_lease("AID.SHELL.EXEC.v1", 3, 1)["lease_token"]
    time.sleep(0.05)
    expired = client.call(*shell, lease_token=short)
    assert expired.status == toolapi.APPROVAL_REQUIRED and "lease expired" in expired.error

    with pytest.raises(ToolhostError, match="tier 3: a tier 1 lease would not cover it") as caught:
        client.issue_lease("AID.SHELL.EXEC.v1", 1, 60_000)
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(ToolhostError, match="above MACHINA_LEASE_MAX_TTL_MS"):
        client.issue_lease("*", 3, 10**9)
    wildcard = client.issue_lease("*", 3, 60_000)["lease_token"]
    assert client.call(*shell, lease_token=wildcard).ok

    # bound to one call: refused (and kept) for any other inputs, spent by exactly that call
    bound = client.issue_lease("AID.SHELL.EXEC.v1", 3, 60_000, inputs={"cmd": ["echo", "approved"]})
    assert bound["inputs_digest"] == inputs_digest(*shell)
    other = client.call("AID.SHELL.EXEC.v1", {"cmd": ["echo", "other"]}, lease_token=bound["lease_token"])
    assert other.status == toolapi.APPROVAL_REQUIRED and "with other inputs" in other.error
    assert client.call(*shell, lease_token=bound["lease_token"]).output["stdout"] == "approved\n"
    with pytest.raises(ToolhostError, match="names its AID"):
        client.issue_lease("*", 3, 60_000, inputs={})
    bad = client.request({"op": "_lease.issue", "aid": "AID.NOOP.v1", "tier": 0, "ttl_ms": 1, "inputs_digest": "x"})
    assert bad["status"] == "bad_request" and "inputs_digest must be a SHA-256" in bad["error"]


def test_lease_enforce_needs_a_lease_even_where_the_mode_allows(toolhost: Start) -> None:
    client = toolhost(MACHINA_PERMISSION_MODE="open", MACHINA_LEASE_ENFORCE="1").client
    write = ("AID.FILE.WRITE.v1", {"path": "work/note.txt", "content": "x", "mkdirs": True})
    assert client.call(*write).status == toolapi.LEASE_REQUIRED
    assert client.call("AID.NOOP.v1", {}).ok, "tier 0 needs no lease"
    token = client.issue_lease("AID.FILE.WRITE.v1", 1, 60_000)["lease_token"]
    assert client.call(*write, lease_token=token).ok
    assert client.call(*write, lease_token=token).status == toolapi.LEASE_REQUIRED


def test_leases_survive_a_restart(toolhost: Start) -> None:
    token = toolhost().client.issue_lease("AID.SHELL.EXEC.v1", 3, 60_000)["lease_token"]
    restarted = toolhost()
    assert restarted.client.call("AID.SHELL.EXEC.v1", {"cmd": ["true"]}, lease_token=token).ok
    spent = toolhost()
    assert spent.client.call("AID.SHELL.EXEC.v1", {"cmd": ["true"]}, lease_token=token).status == "approval_required"


def test_lease_gc(toolhost: Start) -> None:
    client = toolhost().client
    client.issue_lease("*", 1, 1)
    client.issue_lease("*", 1, 60_000)
    time.sleep(0.05)
    assert client.gc_leases() == 1


@pytest.mark.parametrize(
    "mode, overrides, aid, expected",
    [
        ("locked", "", "AID.FILE.WRITE.v1", "denied"),
        ("locked", "", "AID.FILE.READ.v1", "ok"),
        ("supervised", "", "AID.FILE.WRITE.v1", "approval_required"),
        ("standard", "", "AID.FILE.WRITE.v1", "ok"),
        ("open", "", "AID.SHELL.EXEC.v1", "ok"),
        ("open", "AID.SHELL.*=deny", "AID.SHELL.EXEC.v1", "denied"),
        ("standard", "AID.SHELL.EXEC.v1=allow", "AID.SHELL.EXEC.v1", "ok"),
        ("open", "*=ask,AID.NOOP.v1=allow", "AID.FILE.READ.v1", "approval_required"),
    ],
)
def test_mode_matrix_through_the_socket(
    toolhost: Start, machina_root: Path, mode: str, overrides: str, aid: str, expected: str
) -> None:
    (machina_root / "data").mkdir(exist_ok=True)
    (machina_root / "data" / "seen.txt").write_text("seen")
    inputs = {
        "AID.FILE.WRITE.v1": {"path": "data/m.txt", "content": "x", "overwrite": True},
        "AID.FILE.READ.v1": {"path": "data/seen.txt"},
        "AID.SHELL.EXEC.v1": {"cmd": ["true"]},
    }[aid]
    client = toolhost(MACHINA_PERMISSION_MODE=mode, MACHINA_PERMISSION_OVERRIDES=overrides).client
    assert client.call(aid, inputs).status == expected


# --- idempotency ---------------------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_does_not_run_again(toolhost: Start, machina_root: Path) -> None:
    client = toolhost().client
    append = ("AID.MEMORY.APPEND.v1", {"stream": "notes", "text": "once"})
    first = client.call(*append, idempotency_key="k-1")
    second = client.call(*append, idempotency_key="k-1")
    assert first.ok and second.ok and second.output == first.output
    assert client.request({"aid": append[0], "inputs": append[1], "idempotency_key": "k-1"})["replayed"] is True
    assert len((machina_root / "memory" / "notes.jsonl").read_text().splitlines()) == 1
    other = client.call("AID.MEMORY.APPEND.v1", {"stream": "notes", "text": "twice"}, idempotency_key="k-1")
    assert other.status == "bad_request" and "different call" in other.error
    client.call(*append, idempotency_key="k-2")
    assert len((machina_root / "memory" / "notes.jsonl").read_text().splitlines()) == 2


def test_a_refused_call_can_be_retried_with_the_same_key(toolhost: Start) -> None:
    client = toolhost().client
    shell = ("AID.SHELL.EXEC.v1", {"cmd": ["echo", "hi"]})
    assert client.call(*shell, idempotency_key="k").status == toolapi.APPROVAL_REQUIRED
    token = client.issue_lease("AID.SHELL.EXEC.v1", 3, 60_000)["lease_token"]
    assert client.call(*shell, idempotency_key="k", lease_token=token).ok
    assert client.call(*shell, idempotency_key="k").ok, "replayed: no second lease needed for the same call"


# --- start-up ------------------------------------------------------------------------------------------------


def run_toolhost(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root), **env}
    return subprocess.run(toolhost_command(str(root), args), env=environ, capture_output=True, text=True, timeout=60)


def test_bwrap_required_but_missing_stops_the_toolhost(machina_root: Path) -> None:
    result = run_toolhost(machina_root, "--bwrap", "/nonexistent/bwrap", MACHINA_BWRAP_REQUIRED="1")
    assert result.returncode == ExitCode.UNAVAILABLE
    assert "bubblewrap not found at /nonexistent/bwrap" in result.stderr
    assert "MACHINA_BWRAP_REQUIRED=1 forbids running tools without it" in result.stderr


def test_prod_without_bwrap_warns_and_runs_tools_anyway(machina_root: Path) -> None:
    env = {"MACHINA_PROFILE": "prod", "MACHINA_PERMISSION_MODE": "open"}
    with running_toolhost(str(machina_root), env=env, args=("--bwrap", "/nonexistent/bwrap")) as host:
        reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["echo", "unsandboxed"]})
        assert reply.output["stdout"] == "unsandboxed\n"
        assert "WARNING machina.sandbox.policy: bubblewrap not found at /nonexistent/bwrap" in host.log()
        assert "NO namespaces" in host.client.ping()["status"]


def test_dev_without_bwrap_falls_back_silently(machina_root: Path) -> None:
    with running_toolhost(str(machina_root), args=("--bwrap", "/nonexistent/bwrap")) as host:
        assert host.client.call("AID.NOOP.v1", {}).ok
        assert "WARNING" not in host.log()


def test_a_socket_in_use_is_refused(machina_root: Path) -> None:
    with running_toolhost(str(machina_root)) as host:
        result = run_toolhost(machina_root, "--socket", host.socket_path)
        assert result.returncode == ExitCode.CANTCREAT and "already listening" in result.stderr


def test_missing_root_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_toolhost(tmp_path / "nowhere")
    assert result.returncode == ExitCode.CONFIG and "does not exist" in result.stderr


def test_help_matches_the_man_page_options() -> None:
    from ..conftest import run_bin

    result = run_bin("machina-toolhost", "--help", env=bin_env())
    assert result.returncode == 0
    for option in ("--root", "--socket", "--bwrap", "--verbose"):
        assert option in result.stdout
    page = (Path(__file__).resolve().parents[2] / "man" / "machina-toolhost.8").read_text()
    for option in ("root", "socket", "bwrap", "verbose"):
        assert f"\\-\\-{option}" in page


def test_stops_cleanly_on_sigterm_and_removes_its_socket(machina_root: Path) -> None:
    with running_toolhost(str(machina_root)) as host:
        socket_path = host.socket_path
        host.client.call("AID.NOOP.v1", {})
        host.client.close()  # an idle connection would hold the shutdown up to JsonLineServer's 10 s grace
        host.proc.terminate()
        assert host.proc.wait(30) == 0
    assert not os.path.exists(socket_path)
    assert not [p for p in _executor_processes() if str(machina_root) in p]


def _executor_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmd = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "machina.sandbox.executor" in cmd:
            found.append(cmd)
    return found


def test_client_reports_a_missing_toolhost(tmp_path: Path) -> None:
    from machina.ipc.jsonlines import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):
        ToolhostClient(str(tmp_path / "none.sock")).call("AID.NOOP.v1", {})


def test_socket_activation(machina_root: Path, tmp_path: Path) -> None:
    """A listening socket passed by systemd (LISTEN_FDS=1 on fd 3) is used instead of binding one."""
    path = str(tmp_path / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    env = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(machina_root)}
    env.update(TMPDIR=str(tmp_path), PYTHONFAULTHANDLER="1")  # SIGABRT below dumps where a hung start is
    fd = listener.fileno()
    with open(tmp_path / "toolhost.log", "wb") as log:
        proc = subprocess.Popen(
            socket_activated(fd, toolhost_command(str(machina_root))),
            env=env,
            pass_fds=(fd,),
            stdout=log,
            stderr=log,
        )
    try:
        client = ToolhostClient(path, timeout=30)  # a first call waits for an executor to start
        deadline = time.monotonic() + 180  # a loaded CI machine once took more than 60 s
        while True:
            try:
                assert client.call("AID.NOOP.v1", {}).ok
                break
            except ServiceUnavailable:
                client.close()
                if time.monotonic() > deadline or proc.poll() is not None:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to the log
                        proc.wait(30)
                    log = (tmp_path / "toolhost.log").read_text()
                    pytest.fail("the socket-activated toolhost never answered:\n" + log)
                time.sleep(0.05)
        assert not (machina_root / "run" / "toolhost.sock").exists(), "it must not bind a socket of its own"
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
        listener.close()
    assert os.path.exists(path), "a socket systemd owns is not removed"

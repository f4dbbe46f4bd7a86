"""The escape suite, on both sandbox paths, with real bubblewrap and real seccomp (the prod settings).

* fresh: a real machina-toolhost runs each attempt as a program (the system python, allowlisted for the
  test) through AID.SHELL.EXEC.v1, in a new sandbox per call; its environment holds the suite's secrets.
* pooled: the same attempts as code inside a pre-started executor of the toolhost's ``strict`` pool (the
  production ToolRunner and pool, in this process, whose environment holds a secret too).

Then the attempts that go through the toolhost's own checks: the shell allowlist (symlinks, paths) and
the file tools (``..``, symlinks, absolute paths, the suite's own directories), on the pooled path and on
the fresh one (MACHINA_TOOLHOST_POOL_SIZE=0).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from machina import config, toolapi
from machina.root import init_root
from machina.sandbox.policy import resolve_policy, verify
from machina.testing.processes import processes_with_arg
from machina.testing.toolhost import RunningToolhost, running_toolhost
from machina.toolhost.broker import Broker, CallContext, ServiceEmbedder, process_metrics
from machina.toolhost.confine import ConfinedRoot
from machina.toolhost.runners import POOL, Runner, ToolRunner
from machina.toolhost.service import runner_settings

from .conftest import needs_bwrap, tcp_server
from .escapes import ATTEMPTS, POOL_ONLY, Attempt, as_plugin, as_program

pytestmark = [needs_bwrap, pytest.mark.skipif(os.geteuid() != 0, reason="the tool uid drop needs root")]

SECRET_A, SECRET_B = "tok-3sc4pe-", "s3cr3t-a9f1c2"
SECRET = SECRET_A + SECRET_B
SYSTEM_PYTHON = os.path.realpath("/usr/bin/python3")
SANDBOX_ENV = {
    "MACHINA_PROFILE": "prod",
    "MACHINA_SECCOMP_ENABLE": "1",
    "MACHINA_BWRAP_REQUIRED": "1",
    "MACHINA_PERMISSION_MODE": "open",
    "MACHINA_TOOLHOST_ISOLATE": "0",  # pooled executors serve call after call: the harder case
    "MACHINA_TOOL_TIMEOUT_MS": "4000",
    "MACHINA_SHELL_TIMEOUT_MS": "10000",
}


@pytest.fixture(scope="module")
def loopback_server() -> Iterator[int]:
    with tcp_server() as (port, _):
        yield port


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("escape") / "root"
    init_root(str(path))
    (path / "data").mkdir()
    (path / "data" / "app.log").write_text("ERROR one\n")
    return path


@pytest.fixture(scope="module")
def host(root: Path) -> Iterator[RunningToolhost]:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip("the fresh path runs its attempts with the system python3")
    env = {
        **SANDBOX_ENV,
        "MACHINA_SHELL_ALLOWED_EXE": f"{os.path.basename(SYSTEM_PYTHON)},echo,true,cat",
        "MACHINA_API_TOKEN": SECRET,  # the suite's secrets are in the toolhost's environment
        "MACHINA_AUDIT_KEY": SECRET + "-audit",
    }
    with running_toolhost(str(root), env=env) as host:
        yield host


@pytest.fixture(scope="module")
def pooled(root: Path) -> Iterator[ToolRunner]:
    os.environ["ESCAPE_TEST_SECRET"] = SECRET  # in the environment of the process that starts the executors
    cfg = config.load(environ={"MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root), **SANDBOX_ENV})
    policy = verify(cfg, resolve_policy(cfg))
    confined = ConfinedRoot(str(root))
    broker = Broker(
        confined,
        embedder=ServiceEmbedder("/nonexistent/embed.sock", 16),
        enqueue=lambda request, context: {},
        metrics=lambda: process_metrics(time.monotonic(), dict),
        fsync=False,
    )
    runner = ToolRunner(policy, broker, runner_settings(cfg))
    assert set(runner.pools) == {"strict", "net"} and runner.settings.pool_recycle > 1
    runner.start()
    yield runner
    runner.close()
    confined.close()
    del os.environ["ESCAPE_TEST_SECRET"]


@pytest.fixture(scope="module")
def unix_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("sock") / "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(1)
    yield path
    server.close()


def run_fresh(host: RunningToolhost, program: str, timeout_ms: int | None = None) -> toolapi.ToolReply:
    inputs: dict[str, Any] = {"cmd": [SYSTEM_PYTHON, "-I", "-S", "-c", program]}
    if timeout_ms:
        inputs["timeout_ms"] = timeout_ms
    return host.client.call("AID.SHELL.EXEC.v1", inputs)


def run_pooled(runner: ToolRunner, plugin_source: str) -> Any:
    plugin = SimpleNamespace(file="escape.py", source=plugin_source)
    return runner.run(Runner("plugin", POOL), {}, CallContext(), plugin)


def check(attempt: Attempt, result: dict[str, Any]) -> None:
    assert result["escaped"] is False, f"{attempt.name} ESCAPED: {result['detail']}"
    assert re.search(attempt.blocked_by, result["detail"]), f"{attempt.name}: unexpected outcome {result['detail']!r}"


def test_the_suite_is_large_enough() -> None:
    assert len(ATTEMPTS) >= 15
    assert len({a.name for a in ATTEMPTS}) == len(ATTEMPTS)


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if a.name not in POOL_ONLY], ids=lambda a: a.name)
def test_escape_fails_in_a_fresh_sandbox(attempt: Attempt, host: RunningToolhost, loopback_server: int) -> None:
    constants = {"ROOT": host.root, "PORT": loopback_server, "TOOLHOST_SOCKET": host.socket_path}
    reply = run_fresh(host, as_program(attempt, {**constants, "SECRET_A": SECRET_A, "SECRET_B": SECRET_B}))
    assert reply.status == toolapi.OK, f"{reply.status}: {reply.error} {reply.output.get('stderr', '')}"
    check(attempt, json.loads(reply.output["stdout"]))


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=lambda a: a.name)
def test_escape_fails_in_a_pooled_executor(
    attempt: Attempt, pooled: ToolRunner, root: Path, loopback_server: int, unix_listener: str
) -> None:
    constants = {"ROOT": str(root), "PORT": loopback_server, "TOOLHOST_SOCKET": unix_listener}
    outcome = run_pooled(pooled, as_plugin(attempt, {**constants, "SECRET_A": SECRET_A, "SECRET_B": SECRET_B}))
    assert outcome.status == toolapi.OK and outcome.path == POOL, f"{outcome.status}: {outcome.error}"
    check(attempt, outcome.output)


def test_a_fresh_sandbox_does_not_outlive_its_timeout(host: RunningToolhost) -> None:
    tag = f"{time.time_ns() % 10**9}.5"
    program = (
        "import subprocess, time\n"
        f"subprocess.Popen(['/usr/bin/sleep', '{tag}'], start_new_session=True)\n"
        "time.sleep(120)\n"
    )
    started = time.monotonic()
    reply = run_fresh(host, program, timeout_ms=1500)
    assert reply.status == toolapi.TIMEOUT and reply.output["timed_out"] is True
    assert time.monotonic() - started < 15
    assert processes_with_arg(tag) == []


def test_a_pooled_executor_does_not_outlive_its_timeout(pooled: ToolRunner) -> None:
    started = time.monotonic()
    pool = pooled.pools["strict"]
    before = pool.stats()["retired"]
    outcome = run_pooled(pooled, "def run(inputs, host):\n    while True:\n        pass\n")
    assert outcome.status == toolapi.TIMEOUT
    assert time.monotonic() - started < 15
    assert pool.stats()["retired"] == before + 1  # killed, not returned to the pool
    after = run_pooled(pooled, "def run(inputs, host):\n    return {'alive': True}\n")
    assert after.status == toolapi.OK and after.output == {"alive": True}


# --- the toolhost's own checks ------------------------------------------------------------------------------


def test_allowlist_cannot_be_escaped_through_a_symlink_or_a_path(host: RunningToolhost, tmp_path: Path) -> None:
    disguised = tmp_path / "cat"
    disguised.symlink_to("/usr/bin/id")  # named like an allowed program, is another one
    for cmd in (
        [str(disguised)],
        ["id"],
        ["../../usr/bin/id"],
        ["/usr/bin/../bin/id"],
        ["./cat"],
        ["sh", "-c", "id"],
        ["bash", "-c", "id"],
    ):
        reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": cmd})
        assert reply.status in (toolapi.DENIED, toolapi.TOOL_ERROR), (cmd, reply)
        assert "uid=" not in reply.output.get("stdout", ""), cmd
    assert host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["id"]}).status == toolapi.DENIED


def test_no_shell_interprets_arguments(host: RunningToolhost) -> None:
    reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["echo", "$(id)", ";", "id", "`id`"]})
    assert reply.ok and reply.output["stdout"] == "$(id) ; id `id`\n"


def test_the_caller_cannot_give_an_environment(host: RunningToolhost) -> None:
    reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["true"], "env": {"PATH": "/tmp"}})
    assert reply.status == toolapi.INVALID_INPUT


FILE_TRICKS = [
    ("AID.FILE.READ.v1", {"path": "../../../../etc/passwd"}, "'..' is not allowed"),
    ("AID.FILE.READ.v1", {"path": "data/../../etc/passwd"}, "'..' is not allowed"),
    ("AID.FILE.READ.v1", {"path": "/etc/passwd"}, "outside the working root"),
    ("AID.FILE.READ.v1", {"path": "data/passwd-link"}, "symbolic link"),
    ("AID.FILE.READ.v1", {"path": "data/etc-link/passwd"}, "symbolic link"),
    ("AID.FILE.READ.v1", {"path": "data/inside-link"}, "symbolic link"),
    ("AID.FILE.READ.v1", {"path": "state/toolhost/leases.json"}, "belongs to the suite"),
    ("AID.FILE.READ.v1", {"path": "queue/inbox"}, "belongs to the suite"),
    ("AID.FILE.READ.v1", {"path": "data/fifo"}, "not a regular file"),
    ("AID.FILE.READ.v1", {"path": "data\x00/../etc"}, "not a usable path"),
    ("AID.ERROR_SCAN.v1", {"input_path": "/proc/self/environ"}, "outside the working root"),
    ("AID.FILE.WRITE.v1", {"path": "queue/inbox/p0000_rq_1_evil.json", "content": "{}"}, "belongs to the suite"),
    ("AID.FILE.WRITE.v1", {"path": "plugins/pins.json", "content": "{}", "overwrite": True}, "belongs to the suite"),
    ("AID.FILE.WRITE.v1", {"path": "state/toolhost/leases.json", "content": "{}"}, "belongs to the suite"),
    ("AID.FILE.WRITE.v1", {"path": "data/passwd-link", "content": "x", "overwrite": True}, "symbolic link"),
    ("AID.FILE.WRITE.v1", {"path": "data/etc-link/evil", "content": "x", "mkdirs": True}, "symbolic link"),
    ("AID.FILE.WRITE.v1", {"path": "../evil", "content": "x"}, "'..' is not allowed"),
    ("AID.REPORT_SUMMARY.v1", {"output_path": "data/etc-link/report.md", "findings": []}, "symbolic link"),
    # D1: nothing the suite executes (the policy driver's scripts) is writable, by any file tool
    ("AID.FILE.WRITE.v1", {"path": "policies/first_pending.py", "content": "x", "mkdirs": True}, "policies/ is not"),
    ("AID.REPORT_SUMMARY.v1", {"output_path": "policies/p.py", "title": "import os"}, "policies/ is not writable"),
    ("AID.FILE.WRITE.v1", {"path": "logs/machina-up.log", "content": "x"}, "logs/ belongs to the suite"),
    # D3: other runs' logs, memory and the policies are not readable; nor is a dot-file
    ("AID.FILE.READ.v1", {"path": "logs/machina-up.log"}, "logs/ belongs to the suite"),
    ("AID.ERROR_SCAN.v1", {"input_path": "memory/notes.jsonl"}, "memory/ belongs to the suite"),
    ("AID.FILE.READ.v1", {"path": "policies/first_pending.py"}, "policies/ is not readable"),
    ("AID.FILE.READ.v1", {"path": "data/.hidden"}, ".hidden is a hidden name"),
]


PLANTED = ("logs/machina-up.log", "memory/notes.jsonl", "policies/first_pending.py", "data/.hidden")


@pytest.fixture(scope="module")
def tricky_root(root: Path) -> Path:
    data = root / "data"
    for name, target in (("passwd-link", "/etc/passwd"), ("etc-link", "/etc"), ("inside-link", "app.log")):
        if not (data / name).is_symlink():
            (data / name).symlink_to(target)
    if not (data / "fifo").exists():
        os.mkfifo(data / "fifo")
    for planted in PLANTED:
        (root / planted).parent.mkdir(exist_ok=True)
        (root / planted).write_text("planted\n")
    return root


@pytest.fixture(scope="module")
def isolated(tricky_root: Path, host: RunningToolhost) -> Iterator[RunningToolhost]:
    socket_path = str(tricky_root / "run" / "isolated.sock")
    env = {**SANDBOX_ENV, "MACHINA_TOOLHOST_POOL_SIZE": "0"}  # every built-in call in an executor of its own
    with running_toolhost(str(tricky_root), env=env, socket_path=socket_path) as host:
        yield host


@pytest.mark.parametrize(
    "aid, inputs, refusal", FILE_TRICKS, ids=lambda v: v if isinstance(v, str) and "." in v else None
)
@pytest.mark.parametrize("path", ["pooled", "fresh"])
def test_file_tool_tricks_are_refused(
    aid: str, inputs: dict[str, Any], refusal: str, path: str, tricky_root: Path, host: RunningToolhost, request
) -> None:
    target = host if path == "pooled" else request.getfixturevalue("isolated")
    before = sorted(p.name for p in (tricky_root / "queue" / "inbox").iterdir())
    reply = target.client.call(aid, inputs)
    assert reply.status == toolapi.TOOL_ERROR and refusal in reply.error, reply
    assert "root:" not in json.dumps(reply.output)
    assert sorted(p.name for p in (tricky_root / "queue" / "inbox").iterdir()) == before
    assert Path("/etc/passwd").read_text().startswith("root:")
    assert all((tricky_root / planted).read_text() == "planted\n" for planted in PLANTED)

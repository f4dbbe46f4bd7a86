"""The built-in tools through a real toolhost: results, limits, errors, and the pool's behaviour."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost
from machina.toolhost.runners import BUILTIN_RUNNERS, INLINE, POOL

from .conftest import needs_bwrap

pytestmark = needs_bwrap
Start = Callable[..., RunningToolhost]
OPEN = {"MACHINA_PERMISSION_MODE": "open"}


def fill(root: Path) -> Path:
    folder = root / "data"
    folder.mkdir()
    (folder / "app.log").write_text("".join(f"{'ERROR' if i % 3 == 0 else 'INFO'} line {i}\n" for i in range(30)))
    (folder / "blob.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    return folder


@pytest.fixture
def data(machina_root: Path) -> Path:
    return fill(machina_root)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    """One toolhost for the tests that need no configuration of their own (starting one costs a second)."""
    root = tmp_path_factory.mktemp("tools") / "root"
    init_root(str(root))
    fill(root)
    env = {**OPEN, "MACHINA_SHELL_ALLOWED_EXE": "echo,ls,head,cat", "MACHINA_FILE_READ_MAX_BYTES": "64"}
    with running_toolhost(str(root), env=env) as host:
        yield host


# --- SHELL.EXEC ----------------------------------------------------------------------------------------------


def test_shell_exec_results_and_errors(shared: RunningToolhost) -> None:
    client = shared.client
    ok = client.call("AID.SHELL.EXEC.v1", {"cmd": ["echo", "-n", "a b"]})
    assert (
        ok.ok and ok.output["stdout"] == "a b" and ok.output["exit_code"] == 0 and ok.output["exe"] == "/usr/bin/echo"
    )
    failed = client.call("AID.SHELL.EXEC.v1", {"cmd": ["ls", "/nonexistent"]})
    assert failed.status == toolapi.TOOL_ERROR and failed.output["exit_code"] == 2
    assert "No such file" in failed.output["stderr"] and "exited with status 2" in failed.error
    capped = client.call("AID.SHELL.EXEC.v1", {"cmd": ["head", "-c", "5000", "/dev/zero"], "stdout_max": 100})
    assert len(capped.output["stdout"]) == 100 and capped.output["stdout_truncated"] and capped.output["truncated"]
    elsewhere = client.call("AID.SHELL.EXEC.v1", {"cmd": ["ls"], "cwd": "/nonexistent"})
    assert elsewhere.status == toolapi.TOOL_ERROR
    assert client.call("AID.SHELL.EXEC.v1", {"cmd": ["ls"], "cwd": "/tmp/../etc"}).status == toolapi.TOOL_ERROR
    assert client.call("AID.SHELL.EXEC.v1", {"cmd": ["cat", "/etc/hostname"], "cwd": "/usr"}).status in (
        "ok",
        "tool_error",
    )


def test_shell_limits_can_only_be_lowered(toolhost: Start) -> None:
    client = toolhost(**OPEN, MACHINA_SHELL_ALLOWED_EXE="sleep", MACHINA_SHELL_TIMEOUT_MS="1000").client
    started = time.monotonic()
    reply = client.call("AID.SHELL.EXEC.v1", {"cmd": ["sleep", "20"], "timeout_ms": 600000})
    assert reply.status == toolapi.TIMEOUT and reply.output["timed_out"]
    assert time.monotonic() - started < 8
    quick = client.call("AID.SHELL.EXEC.v1", {"cmd": ["sleep", "5"], "timeout_ms": 200})
    assert quick.status == toolapi.TIMEOUT and quick.duration_ms < 3000


# --- files ---------------------------------------------------------------------------------------------------


def test_file_read_text_binary_and_caps(shared: RunningToolhost) -> None:
    data = Path(shared.root) / "data"
    client = shared.client
    text = client.call("AID.FILE.READ.v1", {"path": "data/app.log", "max_bytes": 10})
    assert text.output == {
        "path": "data/app.log",
        "content": "ERROR line",
        "encoding": "utf-8",
        "bytes": 10,
        "size": (data / "app.log").stat().st_size,
        "truncated": True,
    }
    capped = client.call("AID.FILE.READ.v1", {"path": "data/app.log", "max_bytes": 10**6})
    assert capped.output["bytes"] == 64, "a caller cannot raise MACHINA_FILE_READ_MAX_BYTES"
    binary = client.call("AID.FILE.READ.v1", {"path": "data/blob.bin"})
    assert binary.output["encoding"] == "base64" and base64.b64decode(binary.output["content"]) == bytes(
        range(255, 191, -1)
    )
    assert client.call("AID.FILE.READ.v1", {"path": "data/none"}).error == "data/none: no such file"


def test_file_write_is_atomic_with_a_backup(shared: RunningToolhost) -> None:
    data = Path(shared.root) / "data"
    client = shared.client
    first = client.call("AID.FILE.WRITE.v1", {"path": "data/out/new.txt", "content": "v1", "mkdirs": True})
    assert first.output == {"path": "data/out/new.txt", "bytes": 2, "created": True, "backup": None}
    refused = client.call("AID.FILE.WRITE.v1", {"path": "data/out/new.txt", "content": "v2"})
    assert refused.status == toolapi.TOOL_ERROR and "already exists" in refused.error
    second = client.call("AID.FILE.WRITE.v1", {"path": "data/out/new.txt", "content": "v2", "overwrite": True})
    assert second.output["backup"] == "data/out/new.txt.bak"
    assert (data / "out" / "new.txt").read_text() == "v2" and (data / "out" / "new.txt.bak").read_text() == "v1"
    assert sorted(p.name for p in (data / "out").iterdir()) == ["new.txt", "new.txt.bak"]
    nodir = client.call("AID.FILE.WRITE.v1", {"path": "data/nowhere/x.txt", "content": "x"})
    assert "does not exist" in nodir.error


def test_error_scan(shared: RunningToolhost) -> None:
    client = shared.client
    reply = client.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log", "max_rows": 2})
    assert (reply.output["matches"], reply.output["lines"], reply.output["truncated"]) == (10, 30, True)
    assert reply.output["rows"] == [{"line": 1, "text": "ERROR line 0"}, {"line": 4, "text": "ERROR line 3"}]
    custom = client.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log", "pattern": r"line 2\d$"})
    assert custom.output["matches"] == 10
    bad = client.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log", "pattern": "(unclosed"})
    assert bad.status == toolapi.TOOL_ERROR and "not a valid regular expression" in bad.error


def test_a_runaway_pattern_times_out_and_the_pool_recovers(toolhost: Start, data: Path) -> None:
    (data / "evil.log").write_text("a" * 40 + "!\n")
    client = toolhost(MACHINA_TOOL_TIMEOUT_MS="1500").client
    started = time.monotonic()
    reply = client.call("AID.ERROR_SCAN.v1", {"input_path": "data/evil.log", "pattern": "^(a+)+$"})
    assert reply.status == toolapi.TIMEOUT and time.monotonic() - started < 10
    assert client.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log"}).output["matches"] == 10
    pools = client.call("AID.PROC.SELF_METRICS.v1", {}).output["toolhost"]["pools"]
    assert pools["strict"]["retired"] >= 1


def test_report_summary(shared: RunningToolhost) -> None:
    machina_root = Path(shared.root)
    client = shared.client
    reply = client.call(
        "AID.REPORT_SUMMARY.v1",
        {"title": "Nightly scan", "findings": {"errors": 10}, "next_steps": ["rotate logs"]},
        run_id="run-42",
    )
    assert reply.ok and reply.output["output_path"] == "reports/run-42.md"
    text = (machina_root / "reports" / "run-42.md").read_text()
    assert text.startswith("# Nightly scan\n") and "for run run-42" in text
    assert '"errors": 10' in text and "## Next steps\n\n- rotate logs" in text
    again = client.call("AID.REPORT_SUMMARY.v1", {"output_path": "reports/run-42.md", "findings": "none"})
    assert again.output["backup"] == "reports/run-42.md.bak"


# --- memory and embeddings -----------------------------------------------------------------------------------


def test_memory_append_writes_whole_locked_lines(shared: RunningToolhost) -> None:
    machina_root = Path(shared.root)
    client = shared.new_client()
    errors: list[object] = []

    def append(n: int) -> None:
        for i in range(10):
            reply = client.call("AID.MEMORY.APPEND.v1", {"stream": "exp", "record": {"n": n, "i": i}}, run_id=f"r{n}")
            if not reply.ok:
                errors.append(reply)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = [json.loads(line) for line in (machina_root / "memory" / "exp.jsonl").read_text().splitlines()]
    assert len(lines) == 40 and {(e["record"]["n"], e["record"]["i"]) for e in lines} == {
        (n, i) for n in range(4) for i in range(10)
    }
    assert all(e["run_id"] == f"r{e['record']['n']}" for e in lines)
    assert client.call("AID.MEMORY.APPEND.v1", {"stream": "exp"}).status == toolapi.INVALID_INPUT
    assert client.call("AID.MEMORY.APPEND.v1", {"stream": "../etc", "text": "x"}).status == toolapi.INVALID_INPUT


def test_memory_append_refuses_the_typed_streams_of_the_agent(shared: RunningToolhost) -> None:
    """A job must not forge experiences, insights or skills (AGENT.md fault 10): those are the agent's own."""
    for stream in ("experiences", "insights", "skills", "knowledge", "entities", "relations"):
        reply = shared.client.call("AID.MEMORY.APPEND.v1", {"stream": stream, "record": {"success": True}})
        assert not reply.ok and reply.status == toolapi.TOOL_ERROR, (stream, reply)
        assert reply.error == f"memory/{stream} is written by the agent components only (a typed stream)"
    assert shared.client.call("AID.MEMORY.QUERY.v1", {"stream": "experiences", "query": "x"}).ok  # reading is fine


def test_memory_query_of_an_empty_stream(shared: RunningToolhost) -> None:
    reply = shared.client.call("AID.MEMORY.QUERY.v1", {"stream": "nothing", "query": "x"})
    assert reply.ok and reply.output["results"] == [] and reply.output["scanned"] == 0


def test_memory_query_ranks_with_the_local_embedding_when_machina_embed_is_down(shared: RunningToolhost) -> None:
    client = shared.client
    for text in ("disk full on node 3", "the cat sat on the mat", "disk quota exceeded on node 7"):
        client.call("AID.MEMORY.APPEND.v1", {"stream": "kb", "text": text})
    reply = client.call("AID.MEMORY.QUERY.v1", {"stream": "kb", "query": "disk full", "top_k": 2})
    assert reply.ok and reply.output["embedder"].startswith("hash (local fallback")
    assert reply.output["results"][0]["text"] == "disk full on node 3"
    assert len(reply.output["results"]) == 2 and reply.output["scanned"] == 3


def test_embed_text_says_when_machina_embed_is_not_running(shared: RunningToolhost) -> None:
    reply = shared.client.call("AID.EMBED.TEXT.v1", {"text": "hello"})
    assert reply.status == toolapi.TOOL_ERROR and "machina-embed is not available" in reply.error


# --- the rest ------------------------------------------------------------------------------------------------


def test_self_metrics_noop_ask_and_gpu(shared: RunningToolhost) -> None:
    host = shared
    client = host.client
    metrics = client.call("AID.PROC.SELF_METRICS.v1", {}).output
    assert len(metrics["host"]["loadavg"]) == 3 and metrics["host"]["mem_total_kb"] > 0
    assert metrics["toolhost"]["pid"] == host.pid and metrics["toolhost"]["calls_total"] >= 0
    assert client.call("AID.NOOP.v1", {"anything": [1]}).output == {}
    assert client.call("AID.ASK_SUP.v1", {"question": "deploy?"}).output == {
        "ask_supervisor": True,
        "question": "deploy?",
    }
    gpu = client.call("AID.GPU_SMOKE.v1", {})
    assert gpu.ok, gpu
    if not os.path.exists("/dev/nvidia0"):
        assert gpu.output["gpu"] is False and gpu.output["reason"] == "no GPU: /dev/nvidia0 does not exist"


def test_queue_enqueue_narrows_capabilities(toolhost: Start, machina_root: Path) -> None:
    client = toolhost().client
    request = {"goal_id": "goal.FOLLOW_UP.v1", "_capabilities": {"allowed_tools": ["*"]}}
    reply = client.call("AID.QUEUE.ENQUEUE.v1", {"request": request}, capabilities={"allowed_tools": ["AID.FILE.*"]})
    assert reply.ok, reply
    assert reply.output["capabilities"] == {"allowed_tools": ["AID.FILE.*"]}
    (job,) = list((machina_root / "queue" / "inbox").iterdir())
    assert json.loads(job.read_text())["_capabilities"] == {"allowed_tools": ["AID.FILE.*"]}
    bad = client.call("AID.QUEUE.ENQUEUE.v1", {"request": {"no_goal": 1}})
    assert bad.status == toolapi.TOOL_ERROR and "not enqueued" in bad.error


def test_a_job_started_by_a_tool_cannot_carry_leases(toolhost: Start, machina_root: Path) -> None:
    lease = {"aid": "AID.SHELL.EXEC.v1", "inputs_digest": "ab" * 32, "token": "mlease_a_b"}
    request = {"goal_id": "goal.FOLLOW_UP.v1", "_leases": [lease]}
    reply = toolhost().client.call("AID.QUEUE.ENQUEUE.v1", {"request": request})
    assert reply.status == toolapi.TOOL_ERROR and "cannot carry _leases" in reply.error
    assert list((machina_root / "queue" / "inbox").iterdir()) == []


# --- HTTP_GET ------------------------------------------------------------------------------------------------


def test_http_get_refuses_loopback_and_never_connects(shared: RunningToolhost) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        client = shared.client
        for url in (
            f"http://127.0.0.1:{port}/",
            f"http://localhost:{port}/",
            f"http://[::1]:{port}/",
            f"http://2130706433:{port}/",
        ):
            reply = client.call("AID.NET.HTTP_GET.v1", {"url": url})
            assert reply.status == toolapi.TOOL_ERROR and reply.error.startswith("refused:"), (url, reply)
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_http_get_needs_approval_in_standard_mode(toolhost: Start) -> None:
    reply = toolhost().client.call("AID.NET.HTTP_GET.v1", {"url": "http://example.com/"})
    assert reply.status == toolapi.APPROVAL_REQUIRED


# --- the pool ------------------------------------------------------------------------------------------------


#: A pooled tool that needs no input and touches nothing the test cares about: what exercises the pool.
POOLED_PURE = "AID.PROC.SELF_METRICS.v1"


def _pool(client) -> dict:
    return client.call("AID.PROC.SELF_METRICS.v1", {}).output["toolhost"]["pools"]["strict"]


def test_pooled_executors_are_recycled_after_n_calls(toolhost: Start) -> None:
    client = toolhost(MACHINA_TOOLHOST_POOL_RECYCLE="3", MACHINA_TOOLHOST_POOL_SIZE="1").client
    before = _pool(client)
    for _ in range(9):
        assert client.call(POOLED_PURE, {}).ok
    after = _pool(client)
    assert after["retired"] - before["retired"] >= 3


def test_a_healthy_executor_serves_call_after_call(toolhost: Start) -> None:
    """Regression: the pool used to top itself up while a call ran and then retire the executor coming
    back, so every pooled call paid for a fresh sandbox start."""
    client = toolhost(MACHINA_TOOLHOST_POOL_SIZE="2").client
    time.sleep(1.0)  # let the pool fill
    before = _pool(client)
    for _ in range(10):
        assert client.call(POOLED_PURE, {}).ok
        time.sleep(0.1)  # calls spaced out like a worker's: room for a spawner to "top up"
    after = _pool(client)
    assert after["retired"] == before["retired"]
    assert after["started"] == before["started"]


def test_isolate_gives_every_call_an_executor_of_its_own(toolhost: Start) -> None:
    client = toolhost(MACHINA_TOOLHOST_ISOLATE="1").client
    before = _pool(client)["retired"]
    for _ in range(4):
        assert client.call(POOLED_PURE, {}).ok
    assert _pool(client)["retired"] - before >= 4


def test_noop_and_ask_sup_run_inline_without_any_executor(toolhost: Start) -> None:
    """They touch nothing: no executor is taken for them, with or without a pool (issue 16: one hop less)."""
    for size in ("1", "0"):
        client = toolhost(MACHINA_TOOLHOST_POOL_SIZE=size).client
        paths = {t["aid"]: t["path"] for t in client.list_tools()}
        assert paths["AID.NOOP.v1"] == paths["AID.ASK_SUP.v1"] == INLINE
        before = _pool(client) if size == "1" else None
        assert client.call("AID.NOOP.v1", {"anything": [1]}).output == {}
        assert client.call("AID.ASK_SUP.v1", {"question": "deploy?"}).output["question"] == "deploy?"
        if before is not None:
            after = _pool(client)
            assert (after["started"], after["retired"]) == (before["started"], before["retired"])


def test_without_a_pool_every_call_starts_a_fresh_executor(toolhost: Start, data: Path) -> None:
    client = toolhost(MACHINA_TOOLHOST_POOL_SIZE="0").client
    pooled = {aid for aid, runner in BUILTIN_RUNNERS.items() if runner.path == POOL}
    paths = {t["aid"]: t["path"] for t in client.list_tools()}
    assert {paths[aid] for aid in pooled} == {"fresh"}
    assert {aid for aid, path in paths.items() if path == "fresh"} == pooled | {"AID.GPU_SMOKE.v1"}
    assert client.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log"}).output["matches"] == 10


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for a netns")
def test_http_get_fetches_a_public_address_in_a_private_network_namespace(tmp_path: Path) -> None:
    """The whole path through the net sandbox: a server on a public address, in a network namespace of our own."""
    helper = Path(__file__).with_name("http_in_netns.py")
    result = subprocess.run(
        ["unshare", "--net", "--", sys.executable, str(helper), str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    plain = results["plain"]
    assert plain["ok"], plain
    assert (plain["output"]["status"], plain["output"]["ip"], plain["output"]["truncated"]) == (
        200,
        "93.184.215.14",
        True,
    )
    assert plain["output"]["body"] == "x" * 100, "MACHINA_HTTP_STDOUT_MAX caps the body"
    assert results["lowered"]["output"]["body"] == "x" * 10
    redirect = results["redirect"]
    assert redirect["ok"] and redirect["output"]["status"] == 302, "redirects are returned, never followed"
    assert results["not_allowed"]["status"] == "tool_error" and "refused" in results["not_allowed"]["error"]


def test_embed_text_and_memory_query_use_a_running_machina_embed(shared: RunningToolhost) -> None:
    from machina.embed.client import EmbedClient
    from machina.embed.hashing import hash_embed
    from machina.ipc.jsonlines import ServiceUnavailable

    socket_path = os.path.join(shared.root, "run", "embed.sock")
    env = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": shared.root}
    with open(os.path.join(shared.root, "embed-test.log"), "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "machina.entrypoints", "machina-embed", "--root", shared.root],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with EmbedClient(socket_path, timeout=5) as probe:
                    probe.ping()
                break
            except ServiceUnavailable:
                assert time.monotonic() < deadline and proc.poll() is None, "machina-embed did not start"
                time.sleep(0.05)
        reply = shared.client.call("AID.EMBED.TEXT.v1", {"text": "disk full on node 3"})
        assert reply.ok and reply.output["embedder"] == "machina-embed" and reply.output["dim"] == 128, reply
        expected = hash_embed(["disk full on node 3"], 128)[0]
        assert max(abs(a - b) for a, b in zip(reply.output["vector"], expected, strict=True)) < 1e-6
        shared.client.call("AID.MEMORY.APPEND.v1", {"stream": "embedded", "text": "disk full on node 3"})
        shared.client.call("AID.MEMORY.APPEND.v1", {"stream": "embedded", "text": "a poem about cats"})
        query = shared.client.call("AID.MEMORY.QUERY.v1", {"stream": "embedded", "query": "disk full", "top_k": 1})
        assert query.output["embedder"] == "machina-embed"
        assert [r["text"] for r in query.output["results"]] == ["disk full on node 3"]
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace with a small tmpfs")
def test_a_write_that_does_not_fit_fails_cleanly_and_keeps_the_old_file(tmp_path: Path) -> None:
    helper = Path(__file__).with_name("write_on_full_disk.py")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--", sys.executable, str(helper), str(mountpoint)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    assert results["big"]["status"] == "tool_error" and "No space left on device" in results["big"]["error"]
    assert results["inline"]["status"] == "tool_error" and "No space left on device" in results["inline"]["error"]
    assert results["kept"] == "the old content"
    assert results["small"]["ok"], "the disk is usable again: the failed write left nothing behind"
    assert results["files"] == ["keep.txt", "new.txt"]

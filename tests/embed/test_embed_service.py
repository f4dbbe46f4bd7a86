"""machina-embed as a real process on its real socket: the protocol, errors, durability, activation, peers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from embed_support import BIN, EmbedProcess, builtin_menu, fake_command

from machina.embed.client import EmbedClient, EmbedError
from machina.embed.selector import CentroidSelector
from machina.ipc.jsonlines import JsonLineClient, ServiceUnavailable
from machina.testing.activation import socket_activated

GOAL = "scan app.log for ERROR lines"


def test_every_op_over_the_socket(embed_process) -> None:  # type: ignore[no-untyped-def]
    service = embed_process()
    with service.client() as client:
        assert client.ping() == {"service": "machina-embed", "provider": "hash", "dim": 128, "backend": "numpy"}
        vectors = client.embed(["read the file", "fetch a page"])
        assert len(vectors) == 2 and all(len(v) == 128 for v in vectors)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        single = client.call({"op": "embed", "text": "read the file"})
        assert single["embedding"] == vectors[0] and single["fallback"] is False

        reply = client.select(GOAL, builtin_menu(), top_k=2)
        assert reply["picks"][0]["aid"] == "AID.ERROR_SCAN.v1" and len(reply["picks"]) == 2
        assert reply["below_floor"] is False and len(reply["scores"]) == len(builtin_menu())
        batch = client.select_many([GOAL, "fetch the web page over http"], builtin_menu())
        assert batch[0] == {**reply, "picks": reply["picks"][:1]}
        assert batch[1]["picks"][0]["aid"] == "AID.NET.HTTP_GET.v1"

        assert client.record_success("AID.ERROR_SCAN.v1", GOAL) == 1
        stats = client.stats()
    # One ping is the readiness probe of EmbedProcess.start.
    assert stats["requests"] == {"ping": 2, "embed": 2, "select": 2, "success": 1, "stats": 1}
    assert stats["selections"] == 3 and stats["successes"] == 1 and stats["tools_with_history"] == 1
    assert stats["provider"] == "hash" and "command" not in stats


@pytest.mark.parametrize(
    ("request_obj", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"op": "fly"}, "unknown op 'fly'"),
        ({"op": "embed"}, "exactly one of 'text'"),
        ({"op": "embed", "text": "a", "texts": ["b"]}, "exactly one of 'text'"),
        ({"op": "embed", "texts": "not a list"}, "must be a list of strings"),
        ({"op": "embed", "texts": ["a"] * 6}, "more than MACHINA_EMBED_MAX_TEXTS=5"),
        ({"op": "select", "menu": []}, "exactly one of 'goal'"),
        ({"op": "select", "goal": "x", "menu": [], "top_k": 0}, "'top_k' must be an integer"),
        ({"op": "select", "goal": "x", "menu": [{"sid": "S1"}]}, r"menu[0].aid"),
        ({"op": "success", "goal": "x"}, "'aid' must be a non-empty string"),
    ],
)
def test_bad_requests_get_clear_errors(embed_process, request_obj, message: str) -> None:  # type: ignore[no-untyped-def]
    service = embed_process(MACHINA_EMBED_MAX_TEXTS="5")
    with JsonLineClient(service.socket, timeout=10) as conn:
        reply = conn.call(request_obj)  # type: ignore[arg-type]
        assert reply["ok"] is False and reply["status"] == "bad_request"
        assert message in reply["error"]
        assert conn.call({"op": "ping"})["ok"] is True  # the connection stays usable


def test_malformed_lines_are_answered_not_dropped(embed_process) -> None:  # type: ignore[no-untyped-def]
    service = embed_process()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(service.socket)
        stream = sock.makefile("rwb", buffering=0)
        stream.write(b"{not json\n")
        assert json.loads(stream.readline())["status"] == "bad_request"
        stream.write(b'{"op": "ping"}\n')
        assert json.loads(stream.readline())["ok"] is True


def test_client_raises_with_the_status(embed_process) -> None:  # type: ignore[no-untyped-def]
    with embed_process().client() as client, pytest.raises(EmbedError, match="must be a non-empty string") as info:
        client.record_success("", "goal")
    assert info.value.status == "bad_request" and info.value.exit_code == 65


def test_successes_survive_kill_9_and_restart(embed_process) -> None:  # type: ignore[no-untyped-def]
    goal = "tally the crash dumps"
    service = embed_process()
    with service.client() as client:
        assert client.select(goal, builtin_menu())["picks"][0]["aid"] != "AID.ERROR_SCAN.v1"
        for text in (goal, "tally crash dumps from last night", "tally dumps"):
            client.record_success("AID.ERROR_SCAN.v1", text)
        learned = client.select(goal, builtin_menu())
    assert learned["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
    service.kill()  # SIGKILL right after the acknowledgement: nothing flushed at exit
    restarted = embed_process()
    with restarted.client() as client:
        assert client.select(goal, builtin_menu()) == learned
        assert client.stats()["tools_with_history"] == 1


def test_sigterm_stops_cleanly_and_removes_its_socket(embed_process) -> None:  # type: ignore[no-untyped-def]
    service = embed_process()
    assert os.path.exists(service.socket)
    assert service.stop() == 0
    assert not os.path.exists(service.socket)
    with pytest.raises(ServiceUnavailable):
        EmbedClient(service.socket).ping()


def test_socket_activation(machina_root: Path) -> None:
    """A child started the way systemd does it: the listening socket on fd 3, LISTEN_FDS=1, LISTEN_PID=its pid."""
    path = str(machina_root / "run" / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    service = EmbedProcess(machina_root, socket=path, LISTEN_FDS="1")
    fd = listener.fileno()
    try:
        with open(service.log, "a") as log:
            service.proc = subprocess.Popen(
                socket_activated(fd, [str(BIN / "machina-embed")]),
                env=service.env,
                stdout=log,
                stderr=log,
                pass_fds=(fd,),
            )
        service.wait_ready()
        with EmbedClient(path) as client:
            assert client.select(GOAL, builtin_menu())["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
        assert not os.path.exists(machina_root / "run" / "embed.sock")  # it did not bind a socket of its own
        assert "socket-activated" in service.log.read_text()
        assert service.stop() == 0
        assert os.path.exists(path)  # the socket belongs to whoever passed it (systemd): left in place
    finally:
        if service.proc and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
        listener.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A private directory other uids may traverse (pytest's tmp_path is not reachable for them)."""
    path = Path(tempfile.mkdtemp(prefix="machina-embed-peer-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


PEER_PROBE = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"op": "ping"}\\n')
except BrokenPipeError:
    pass  # a refused peer is answered and closed at once, maybe before it wrote: the answer is still queued
print(s.makefile().readline().strip())
"""


PEER = 64056  # a second, ordinary uid: 65534 is refused in *_ALLOWED_UIDS (the overflow uid, D5)


def ping_as(uid: int, path: str) -> dict[str, object]:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", PEER_PROBE, path],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return dict(json.loads(out))


@pytest.mark.root
@pytest.mark.parametrize(("allowed", "expect_ok"), [("", False), (str(PEER), True)])
def test_peer_uid_is_checked(machina_root: Path, shared_dir: Path, allowed: str, expect_ok: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another uid")
    path = str(shared_dir / "embed.sock")
    service = EmbedProcess(machina_root, socket=path, **({"MACHINA_EMBED_ALLOWED_UIDS": allowed} if allowed else {}))
    try:
        service.start(("--socket", path))
        os.chmod(path, 0o666)  # let the file system admit anyone: the SO_PEERCRED check must still decide
        reply = ping_as(PEER, path)
        assert reply["ok"] is expect_ok
        if not expect_ok:
            assert reply["status"] == "forbidden" and str(PEER) in str(reply["error"])
    finally:
        if service.proc is not None:
            service.proc.kill()
            service.proc.wait()


def test_centroid_selector_against_the_service(embed_process, machina_root: Path) -> None:  # type: ignore[no-untyped-def]
    service = embed_process(MACHINA_EMBED_MIN_SCORE="0.3")
    selector = CentroidSelector(service.client())
    sid, scores = selector.choose(GOAL, builtin_menu())
    assert sid == "SID0005" and set(scores) == {item["sid"] for item in builtin_menu()}  # AID.ERROR_SCAN.v1
    assert scores[sid] == max(scores.values())
    none, below = selector.choose("zebra giraffe antelope", builtin_menu())
    assert none is None and max(below.values()) < 0.3
    selector.record_success("AID.ERROR_SCAN.v1", GOAL)
    assert service.client().stats()["successes"] == 1
    service.stop()
    assert selector.choose(GOAL, builtin_menu()) == (None, {})  # service gone: fall back, do not fail the run
    selector.record_success("AID.ERROR_SCAN.v1", GOAL)  # logged, not raised


def test_command_failures_are_visible_in_stats(embed_process) -> None:  # type: ignore[no-untyped-def]
    service = embed_process(MACHINA_EMBED_PROVIDER="cmd", MACHINA_EMBED_CMD=fake_command("exit3"))
    with service.client() as client:
        reply = client.call({"op": "embed", "texts": ["hello"]})
        assert reply["provider"] == "hash" and reply["fallback"] is True
        selected = client.select(GOAL, builtin_menu())
        assert selected["fallback"] is True and selected["picks"][0]["aid"] == "AID.ERROR_SCAN.v1"
        stats = client.stats()
    assert stats["command"]["failures"]["exit"] == 2 and stats["fallbacks"] == 2
    assert "embedding command failed, falling back to hash" in service.log.read_text()


def test_a_good_command_serves_its_vectors(embed_process) -> None:  # type: ignore[no-untyped-def]
    service = embed_process(MACHINA_EMBED_PROVIDER="cmd", MACHINA_EMBED_CMD=fake_command("slow-good"))
    with service.client() as client:
        reply = client.call({"op": "embed", "texts": ["hello", "world"]})
        assert reply["provider"] == "cmd" and reply["fallback"] is False
        command = client.stats()["command"]
    assert command["runs"] == command["ok"] == 1 and command["skipped"] == 0
    assert set(command["failures"].values()) == {0}


def test_refuses_to_start_without_a_root(tmp_path: Path) -> None:
    from embed_support import bin_env

    proc = subprocess.run([str(BIN / "machina-embed")], env=bin_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78 and "MACHINA_ROOT is not set" in proc.stderr


def test_a_second_instance_on_the_same_socket_is_refused(embed_process, machina_root: Path) -> None:  # type: ignore[no-untyped-def]
    embed_process()
    second = EmbedProcess(machina_root)
    with open(second.log, "a") as log:
        proc = subprocess.run([str(BIN / "machina-embed")], env=second.env, stderr=log, timeout=60)
    assert proc.returncode == 73 and "already listening" in second.log.read_text()

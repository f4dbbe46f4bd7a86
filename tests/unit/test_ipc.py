"""JSON-lines RPC over a real Unix socket: peer credentials, bad input, activation, clean close."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from machina.ipc import activation, jsonlines
from machina.ipc.peercred import PeerCred, peer_cred

from ..conftest import CHECKOUT


def call_once(path: str, request: dict) -> dict:
    with jsonlines.JsonLineClient(path) as client:
        return client.call(request)


@pytest.fixture
def server(tmp_path: Path):
    started = []

    def start(authorize=lambda peer: True, handler=None, max_line=1024, limits=None):
        path = str(tmp_path / f"svc{len(started) or ''}.sock")
        listener = jsonlines.bind_unix(path, mode=0o600)

        def echo(request: dict, peer: PeerCred) -> dict:
            if request.get("boom"):
                raise RuntimeError("internal detail")
            return {"ok": True, "echo": request, "uid": peer.uid, "pid": peer.pid}

        srv = jsonlines.JsonLineServer(
            listener, handler or echo, authorize, max_line=max_line, owned_path=path, limits=limits
        )
        stop = threading.Event()
        thread = threading.Thread(target=srv.serve, args=(stop,), daemon=True)
        thread.start()
        started.append((srv, stop, thread))
        return path, srv

    yield start
    for srv, stop, thread in started:
        stop.set()
        thread.join(5)
        srv.close()


def test_round_trip_with_peer_credentials(server) -> None:
    path, _ = server()
    assert os.stat(path).st_mode & 0o777 == 0o600
    with jsonlines.JsonLineClient(path) as client:
        for i in range(3):
            reply = client.call({"n": i})
            assert reply == {"ok": True, "echo": {"n": i}, "uid": os.geteuid(), "pid": os.getpid()}


def test_unauthorised_peer_is_refused_before_anything_is_read(server) -> None:
    seen = []
    path, _ = server(authorize=lambda peer: False, handler=lambda r, p: seen.append(r) or {"ok": True})
    reply = call_once(path, {"x": 1})
    assert reply["ok"] is False and reply["status"] == "forbidden"
    assert seen == []


def test_a_refusal_sent_and_closed_before_the_client_wrote_still_reaches_it(server) -> None:
    # The server answers a refused peer at once and closes: a slow client meets a closed pipe when it writes.
    path, srv = server(authorize=lambda peer: False)
    client = jsonlines.JsonLineClient(path)
    client._connect()  # connect now, write later: the order a loaded machine can produce
    assert client._sock is not None
    client._sock.settimeout(5)
    assert client._sock.recv(1, socket.MSG_PEEK) == b"{"  # the refusal is here
    for _ in range(500):  # ...and the server has closed its end
        try:
            client._sock.send(b" ")
        except BrokenPipeError:
            break
    reply = client.call({"x": 1})
    assert reply["ok"] is False and reply["status"] == "forbidden"
    assert srv.connections_total == 1, "the answer left behind is the answer: no second connection"
    client.close()


def test_bad_json_and_non_objects_get_error_replies_and_the_connection_lives(server) -> None:
    path, _ = server()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    stream = sock.makefile("rwb", buffering=0)
    for line, expected in ((b"{not json\n", "not JSON"), (b"[1,2]\n", "JSON object")):
        stream.write(line)
        reply = json.loads(stream.readline())
        assert reply["status"] == "bad_request" and expected in reply["error"]
    stream.write(b'{"after":1}\n')
    assert json.loads(stream.readline())["ok"] is True
    sock.close()


def test_handler_crash_is_an_internal_error_without_details(server) -> None:
    path, _ = server()
    reply = call_once(path, {"boom": True})
    assert reply == {"ok": False, "status": "internal_error", "error": "RuntimeError"}


def test_over_long_line_is_refused(server) -> None:
    path, _ = server(max_line=100)
    reply = call_once(path, {"pad": "x" * 500})
    assert reply["status"] == "bad_request" and "too long" in reply["error"]


def test_missing_service_is_unavailable_exit_69(tmp_path: Path) -> None:
    with pytest.raises(jsonlines.ServiceUnavailable) as excinfo:
        call_once(str(tmp_path / "absent.sock"), {})
    assert excinfo.value.exit_code == 69


def test_second_server_on_a_live_socket_is_refused_and_stale_socket_replaced(server, tmp_path: Path) -> None:
    path, _ = server()
    with pytest.raises(jsonlines.ServiceUnavailable, match="already listening"):
        jsonlines.bind_unix(path)
    stale = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)
    dead.close()
    jsonlines.bind_unix(stale).close()


def test_close_removes_the_socket_it_created(server) -> None:
    path, srv = server()
    srv.close()
    assert not os.path.exists(path)


def test_peer_cred_sees_the_other_process(tmp_path: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    assert peer_cred(left) == PeerCred(os.getpid(), os.geteuid(), os.getegid())
    left.close()
    right.close()


def test_socket_activation_in_a_real_child(tmp_path: Path) -> None:
    """A child started with LISTEN_FDS/LISTEN_PID adopts fd 3, serves on it and clears the variables."""
    path = str(tmp_path / "act.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    child = textwrap.dedent("""
        import os, sys
        from machina.ipc import activation
        socks = activation.listen_sockets()
        assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
        assert len(socks) == 1 and socks[0].fileno() == 3
        conn, _ = socks[0].accept()
        conn.sendall(b"adopted\\n")
    """)
    # LISTEN_PID must be the child's own pid: exec through bash so the pid is known before Python starts.
    fd = listener.fileno()
    script = f'LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -c "$0" 3<&{fd} {fd}<&-'
    proc = subprocess.Popen(
        ["/bin/bash", "-c", script, child], pass_fds=[fd], env={**os.environ, "PYTHONPATH": str(CHECKOUT)}
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(path)
    assert client.recv(100) == b"adopted\n"
    assert proc.wait(10) == 0
    client.close()
    listener.close()


def test_activation_ignores_variables_meant_for_another_process() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    assert activation.listen_sockets(env) == []
    assert env == {}


# --- D12: the server bounded connections, threads and idle time by nothing -----------------------------------


def _connected(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def _served(sock: socket.socket) -> dict:
    sock.sendall(b'{"ping": 1}\n')
    return json.loads(sock.makefile("rb").readline())


def test_d12_connections_are_capped_per_uid_and_in_all(server) -> None:
    path, srv = server(limits=jsonlines.ServerLimits(max_per_uid=2, max_total=10, idle_timeout_s=60))
    first, second = _connected(path), _connected(path)
    assert _served(first)["ok"] and _served(second)["ok"]
    third = _connected(path)
    refused = json.loads(third.makefile("rb").readline())
    assert refused["status"] == "busy" and "MACHINA_IPC_MAX_CONNECTIONS_PER_UID=2" in refused["error"]
    assert third.recv(1) == b"", "refused and closed"
    first.close()
    wait_until(lambda: srv._per_uid[os.geteuid()] < 2)
    again = _connected(path)
    assert _served(again)["ok"], "a closed connection frees its place"
    for sock in (second, third, again):
        sock.close()

    path_all, _ = server(limits=jsonlines.ServerLimits(max_per_uid=100, max_total=1, idle_timeout_s=60))
    held = _connected(path_all)
    assert _served(held)["ok"]
    with _connected(path_all) as over:
        assert "MACHINA_IPC_MAX_CONNECTIONS=1" in json.loads(over.makefile("rb").readline())["error"]
    held.close()


def test_d12_an_idle_connection_is_closed_and_the_client_reconnects(server) -> None:
    path, srv = server(limits=jsonlines.ServerLimits(idle_timeout_s=0.2))
    idle = _connected(path)
    assert _served(idle)["ok"]
    idle.settimeout(30)
    assert idle.recv(1) == b"", "the server closed the idle connection"
    idle.close()
    wait_until(lambda: not srv._connections)
    with jsonlines.JsonLineClient(path) as client:
        assert client.call({"n": 1})["ok"]
        wait_until(lambda: not srv._connections)  # closed again while idle
        assert client.call({"n": 2})["ok"], "the client noticed and reconnected"


def wait_until(check, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MACHINA_IPC_MAX_CONNECTIONS_PER_UID", "0", "from 1 to 65536"),
        ("MACHINA_IPC_MAX_CONNECTIONS", "lots", "expected an integer"),
        ("MACHINA_IPC_IDLE_TIMEOUT_MS", "10", "from 1000 to"),
    ],
)
def test_ipc_limits_refuse_bad_values_with_exit_78(name: str, value: str, expected: str) -> None:
    from machina import config

    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"MACHINA_ENV_FILE": "/dev/null", name: value})
    assert name in str(caught.value) and expected in str(caught.value)
    assert caught.value.exit_code == 78


def test_the_services_take_their_limits_from_the_configuration() -> None:
    from machina import config

    cfg = config.load(
        environ={
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_IPC_MAX_CONNECTIONS_PER_UID": "3",
            "MACHINA_IPC_MAX_CONNECTIONS": "9",
            "MACHINA_IPC_IDLE_TIMEOUT_MS": "2500",
        }
    )
    assert jsonlines.ServerLimits.from_config(cfg) == jsonlines.ServerLimits(3, 9, 2.5)

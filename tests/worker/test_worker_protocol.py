"""What a job child starts with (configuration without secrets, a cleared environment) and the framing of
what it says (machina.worker.protocol), on a real socketpair."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from machina import config
from machina.config import VARIABLES
from machina.worker import protocol

SETTINGS = {
    "MACHINA_ROOT": "/srv/machina",
    "MACHINA_PROFILE": "prod",
    "MACHINA_POLICY_CMD": "python3 'policies/my driver.py' --fast",
    "MACHINA_HTTP_ALLOWED_HOSTS": "*.example.com,api.example.org",
    "MACHINA_SELECTOR": "HEURISTIC",
    "MACHINA_WORKER_CONCURRENCY": "3",
    "MACHINA_API_TOKEN": "token-0123456789",
    "MACHINA_API_HMAC_SECRET": "hmac-0123456789",
    "TELEGRAM_BOT_TOKEN": "telegram-0123456789",
    "MACHINA_AUDIT_KEY": "audit-0123456789",
}


def parent_config() -> config.Config:
    return config.load(environ={"MACHINA_ENV_FILE": "/dev/null", **SETTINGS})


def test_a_child_resolves_the_parents_configuration_without_its_secrets() -> None:
    parent = parent_config()
    raw = protocol.child_config(parent, "/run/machina")
    child = config.load(environ={}, overrides=raw)
    for name, var in VARIABLES.items():
        if name == "MACHINA_RUNTIME_DIR":
            assert child[name] == "/run/machina"
        elif name == "MACHINA_ENV_FILE":
            assert child[name] == "/dev/null"
        elif var.secret and name not in protocol.CHILD_SECRETS:
            assert child[name] is None, name
        else:
            assert child[name] == parent[name], name
    assert child["MACHINA_AUDIT_KEY"] == "audit-0123456789"
    text = repr(raw)
    for secret in ("token-0123456789", "hmac-0123456789", "telegram-0123456789"):
        assert secret not in text


def test_a_childs_environment_is_cleared() -> None:
    env = protocol.child_environment(
        {"MACHINA_API_TOKEN": "t", "HOME": "/root", "TZ": "UTC", "LD_PRELOAD": "x.so", "PATH": "/tmp/evil"}
    )
    assert env["PATH"] == protocol.SAFE_PATH
    assert env["TZ"] == "UTC"
    assert not {"MACHINA_API_TOKEN", "HOME", "LD_PRELOAD"} & set(env)
    assert set(env) <= {"PATH", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", *protocol.PASSED_ENVIRONMENT}


@pytest.fixture
def pipe():
    a, b = socket.socketpair()
    left, right = protocol.Channel(a), protocol.Channel(b)
    yield left, right
    left.close()
    right.close()


def test_messages_round_trip(pipe) -> None:
    left, right = pipe
    assert not right.poll(0)
    message = {"op": "run", "request": {"goal_id": "g", "text": "é" * 300000}}  # more than a socket buffer
    sender = threading.Thread(target=left.send, args=(message,))
    sender.start()
    assert right.poll(5)
    assert right.receive() == message
    sender.join()


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack("!i", 8) + b"not json",
        struct.pack("!i", 2) + b"[]",
        struct.pack("!i", 9) + b'{"op": 7}',
        struct.pack("!i", protocol.MESSAGE_MAX + 1),
    ],
)
def test_what_is_not_a_message_is_a_protocol_violation(pipe, frame: bytes) -> None:
    left, right = pipe
    os.write(left.fileno(), frame)
    with pytest.raises(protocol.ProtocolViolation):
        right.receive()


def test_half_a_message_does_not_hold_the_reader(pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    left, right = pipe
    monkeypatch.setattr(protocol, "BODY_TIMEOUT_S", 0.2)
    os.write(left.fileno(), struct.pack("!I", 100) + b'{"op":')
    with pytest.raises(protocol.ProtocolViolation, match="incomplete"):
        right.receive()


def test_a_pipe_closed_mid_message_is_a_violation_and_at_a_boundary_is_eof(pipe) -> None:
    left, right = pipe
    os.write(left.fileno(), struct.pack("!I", 100) + b'{"op":')
    left.close()
    with pytest.raises(protocol.ProtocolViolation, match="middle"):
        right.receive()
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(EOFError):
        protocol.Channel(b).receive()
    b.close()


def test_an_end_that_closes_with_our_message_unread_is_told_apart_from_one_that_read_it(pipe) -> None:
    # The worker releases a job, uncharged, when the child died before reading it; once read, it is an attempt.
    left, right = pipe
    left.send({"op": protocol.RUN})
    right.close()
    with pytest.raises(protocol.Unread):
        left.receive()
    a, b = socket.socketpair()
    reader, writer = protocol.Channel(a), protocol.Channel(b)
    writer.send({"op": protocol.RUN})
    assert reader.receive() == {"op": protocol.RUN}
    reader.close()
    with pytest.raises(EOFError) as caught:
        writer.receive()
    assert not isinstance(caught.value, protocol.Unread)
    writer.close()


@pytest.mark.parametrize(
    ("checked", "ready"),
    [(None, True), ([], True), ("digests", True), (["not-a-digest"], False), ("0" * 64, False), ([["x"]], False)],
)
def test_a_child_takes_its_workers_schema_digests_or_refuses_the_init(machina_root, checked, ready) -> None:
    from machina.engine import Catalog
    from machina.manifests.schemacheck import checked_digests
    from machina.root import open_root
    from machina.worker.children import ChildStartError, JobChild

    cfg = config.load(environ={"MACHINA_ROOT": str(machina_root), "MACHINA_ENV_FILE": "/dev/null"})
    root = open_root(cfg)
    Catalog.load(root)
    os.makedirs(root.runtime_dir, exist_ok=True)
    open(root.socket_path("toolhost"), "w").close()  # the child only looks for it before a job
    init: dict[str, object] = {
        "op": protocol.INIT,
        "worker_id": "t",
        "config": protocol.child_config(cfg, root.runtime_dir),
    }
    if checked is not None:
        init["schemas_checked"] = checked_digests() if checked == "digests" else checked
    child = JobChild.spawn(init)
    try:
        if ready:
            child.wait_ready(timeout=60)
        else:
            with pytest.raises(ChildStartError, match="ended before it was ready"):
                child.wait_ready(timeout=60)
    finally:
        child.kill()

"""The broker's answers to a sandboxed call, in-process: files opened ahead of a call and the one-request write.

The executor's side (``ExecutorContext``) is driven over a real socketpair, the broker's over a real
ConfinedRoot: no sandbox is needed for what is checked here (the same paths run sandboxed in test_tools.py).
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machina import toolapi
from machina.root import init_root
from machina.sandbox import channel
from machina.sandbox.executor import ExecutorContext
from machina.toolhost.broker import Broker, CallContext, CallScope, process_metrics
from machina.toolhost.confine import ConfinedRoot
from machina.tools.base import INLINE_WRITE_MAX, ToolFailure
from machina.tools.files import write_file
from tests.leftovers import open_fds


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "root"
    init_root(str(path))
    (path / "data").mkdir()
    (path / "data" / "app.log").write_text("ERROR one\n")
    (path / "reports").mkdir(exist_ok=True)
    yield path


@pytest.fixture
def broker(root: Path) -> Iterator[Broker]:
    confined = ConfinedRoot(str(root))
    yield Broker(
        confined,
        embedder=lambda texts, fallback: ([], "none"),
        enqueue=lambda request, context: {},
        metrics=lambda: process_metrics(time.monotonic(), dict),
        fsync=False,
    )
    confined.close()


def scope(broker: Broker, *grants: str) -> CallScope:
    return broker.scope(frozenset(grants), CallContext())


# --- files opened ahead of a call ---------------------------------------------------------------------------


def test_a_declared_input_is_opened_ahead_as_open_read_would_answer(broker: Broker) -> None:
    opened, fds = scope(broker, "fs_read").preopen({"input_path": "data/app.log"}, ("input_path",))
    try:
        assert opened == [{"path": "data/app.log", "size": 10}]
        assert os.read(fds[0], 100) == b"ERROR one\n"
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.parametrize(
    "inputs",
    [
        {"input_path": "data/missing.log"},  # the tool asks itself and gets "no such file"
        {"input_path": "queue/inbox"},  # a refused path: refused when the tool asks
        {"input_path": "../etc/passwd"},
        {"input_path": 7},
        {},
    ],
)
def test_what_cannot_be_opened_ahead_is_left_to_the_tool(broker: Broker, inputs: dict[str, Any]) -> None:
    before = open_fds()
    assert scope(broker, "fs_read").preopen(inputs, ("input_path",)) == ([], [])
    assert open_fds() == before


def test_nothing_is_opened_ahead_without_the_read_grant(broker: Broker) -> None:
    assert scope(broker, "fs_write").preopen({"path": "data/app.log"}, ("path",)) == ([], [])


def test_the_same_path_twice_is_opened_once(broker: Broker) -> None:
    opened, fds = scope(broker, "fs_read").preopen({"a": "data/app.log", "b": "data/app.log"}, ("a", "b"))
    for fd in fds:
        os.close(fd)
    assert len(opened) == len(fds) == 1


class FakeToolhost:
    """The toolhost's end of a socketpair: answers ``open_read`` and ``write_file`` with a real CallScope and
    counts the requests."""

    def __init__(self, sock: socket.socket, call: CallScope) -> None:
        self.sock, self.call, self.ops = sock, call, []  # type: ignore[var-annotated]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                request, fds = channel.recv(self.sock)
            except channel.ChannelError:
                return
            for fd in fds:
                os.close(fd)
            self.ops.append(request["op"])
            answer, out = self.call.answer(request["op"], request["args"])
            channel.send(self.sock, answer, out)
            for fd in out:
                os.close(fd)


def test_the_executor_takes_a_file_opened_ahead_without_asking(
    broker: Broker, pair: tuple[socket.socket, socket.socket]
) -> None:
    call = scope(broker, "fs_read")
    host = FakeToolhost(pair[1], call)
    opened, fds = call.preopen({"input_path": "data/app.log"}, ("input_path",))
    ctx = ExecutorContext(pair[0], {}, opened, fds)
    handle, info = ctx.open_read("data/app.log")
    with handle:
        assert handle.read() == b"ERROR one\n" and info == {"size": 10}
    second, _ = ctx.open_read("data/app.log")  # taken once: a second open asks the toolhost
    second.close()
    ctx.close()
    pair[0].close()
    host.thread.join(5)
    assert host.ops == ["open_read"]


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_what_the_tool_did_not_take_is_closed_and_a_mismatch_is_ignored(
    broker: Broker, pair: tuple[socket.socket, socket.socket]
) -> None:
    opened, fds = scope(broker, "fs_read").preopen({"p": "data/app.log"}, ("p",))
    ExecutorContext(pair[0], {}, opened, fds).close()
    assert all(closed(fd) for fd in fds)
    extra = [os.open("/dev/null", os.O_RDONLY), os.open("/dev/null", os.O_RDONLY)]
    ctx = ExecutorContext(pair[0], {}, [{"path": "data/app.log", "size": 1}], extra)  # one entry, two fds
    assert all(closed(fd) for fd in extra), "a list that does not match the descriptors is not trusted"
    ctx.close()


# --- the one-request write ----------------------------------------------------------------------------------


def test_write_file_writes_commits_and_keeps_a_backup(broker: Broker, root: Path) -> None:
    call = scope(broker, "fs_write")
    first = call.answer("write_file", {"path": "reports/r.md", "text": "v1", "mkdirs": True})
    assert first == ({"t": "answer", "ok": True, "result": {"created": True, "backup": None}}, [])
    second, _ = call.answer("write_file", {"path": "reports/r.md", "base64": base64.b64encode(b"\xff\x00").decode()})
    assert not second["ok"] and "already exists" in second["error"]
    third, _ = call.answer("write_file", {"path": "reports/r.md", "text": "v3", "overwrite": True})
    assert third["result"] == {"created": False, "backup": "reports/r.md.bak"}
    assert (root / "reports" / "r.md").read_text() == "v3" and (root / "reports" / "r.md.bak").read_text() == "v1"
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["r.md", "r.md.bak"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"path": "reports/x", "text": "x" * (INLINE_WRITE_MAX + 1)}, "at most"),
        ({"path": "reports/x", "base64": "not base64!"}, "not valid base64"),
        ({"path": "reports/x"}, "needs text or base64"),
        ({"path": "queue/inbox/x.json", "text": "{}"}, "queue"),
        ({"path": "reports/none/x", "text": "x"}, "does not exist"),
    ],
)
def test_a_bad_write_file_request_is_refused_and_leaves_nothing(
    broker: Broker, root: Path, args: dict[str, Any], error: str
) -> None:
    answer, fds = scope(broker, "fs_write").answer("write_file", args)
    assert not answer["ok"] and answer["status"] == toolapi.TOOL_ERROR and error in answer["error"], answer
    assert fds == [] and list((root / "reports").iterdir()) == []


def test_write_file_needs_the_write_grant(broker: Broker, root: Path) -> None:
    answer, _ = scope(broker, "fs_read").answer("write_file", {"path": "reports/x", "text": "x"})
    assert answer["status"] == toolapi.DENIED and "needs fs_write" in answer["error"]
    assert not (root / "reports" / "x").exists()


@pytest.mark.parametrize("size", [0, INLINE_WRITE_MAX, INLINE_WRITE_MAX + 1])
def test_a_tool_s_write_takes_one_request_up_to_the_inline_limit(
    broker: Broker, root: Path, pair: tuple[socket.socket, socket.socket], size: int
) -> None:
    host = FakeToolhost(pair[1], scope(broker, "fs_write"))
    data = bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)  # not UTF-8: the base64 form
    ctx = ExecutorContext(pair[0], {})
    assert write_file(ctx, "reports/blob", data, overwrite=False, mkdirs=False) == {"created": True, "backup": None}
    pair[0].close()
    host.thread.join(5)
    assert (root / "reports" / "blob").read_bytes() == data
    assert host.ops == (["write_file"] if size <= INLINE_WRITE_MAX else ["create_file", "commit"])


def test_a_failed_write_file_reaches_the_tool_as_a_tool_failure(
    broker: Broker, pair: tuple[socket.socket, socket.socket]
) -> None:
    host = FakeToolhost(pair[1], scope(broker, "fs_write"))
    with pytest.raises(ToolFailure, match="does not exist"):
        write_file(ExecutorContext(pair[0], {}), "reports/none/x", b"x", overwrite=False, mkdirs=False)
    pair[0].close()
    host.thread.join(5)

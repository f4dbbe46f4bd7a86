"""The toolhost <-> executor channel on a real socketpair: frames, descriptors, and what it refuses."""

from __future__ import annotations

import os

import pytest

from machina.sandbox import channel
from tests.leftovers import open_fds


def test_a_frame_and_its_descriptors_arrive_together(pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    left, right = pair
    path = tmp_path / "shared.txt"
    path.write_text("hello")
    fd = os.open(path, os.O_RDONLY)
    try:
        channel.send(left, {"t": "answer", "ok": True, "result": {"n": 1}}, [fd])
    finally:
        os.close(fd)
    message, fds = channel.recv(right)
    assert message == {"t": "answer", "ok": True, "result": {"n": 1}}
    assert len(fds) == 1
    with os.fdopen(fds[0], "rb") as handle:
        assert handle.read() == b"hello"


def test_a_frame_over_the_limit_is_refused_before_its_body_is_read(pair) -> None:  # type: ignore[no-untyped-def]
    left, right = pair
    channel.send(left, {"t": "done", "output": "x" * 1000})
    with pytest.raises(channel.ChannelError, match="exceeds the 100-byte limit"):
        channel.recv(right, max_frame=100)


def test_too_many_descriptors_are_refused_and_none_is_kept(pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    left, right = pair
    before = open_fds()
    fds = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) for _ in range(channel.MAX_FDS + 4)]
    try:
        channel.send(left, {"t": "host"}, fds)
    finally:
        for fd in fds:
            os.close(fd)
    with pytest.raises(channel.ChannelError, match="too many descriptors"):
        channel.recv(right)
    assert open_fds() == before  # the descriptors that did arrive were closed


def test_a_closed_peer_is_an_error(pair) -> None:  # type: ignore[no-untyped-def]
    left, right = pair
    left.close()
    with pytest.raises(channel.ChannelError, match="peer closed"):
        channel.recv(right)

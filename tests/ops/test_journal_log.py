"""machina.log under systemd: structured fields over journald's native protocol, on a real datagram socket."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import log
from machina.log import fields, log_context

SECRET = "tok-3f9a7c1e5b"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, log.JournalHandler):
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


@pytest.fixture
def stderr_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A stream standing in for stderr, and JOURNAL_STREAM naming it, as systemd sets it up."""
    with open(tmp_path / "stderr", "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield stream


def parse_fields(payload: bytes) -> dict[str, str]:
    """Decode the native protocol (both the KEY=value form and the binary form with a length)."""
    result: dict[str, str] = {}
    i = 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", payload[nl + 1 : nl + 9])
            value = payload[nl + 9 : nl + 9 + size]
            assert payload[nl + 9 + size : nl + 10 + size] == b"\n"
            i = nl + 10 + size
        result[key.decode()] = value.decode()
    return result


def test_fields_reach_the_journal_socket_and_secrets_do_not(journal, stderr_file) -> None:
    sock, path = journal
    log.setup("machina-worker", secrets=[SECRET], stream=stderr_file, journal_socket=path)
    with log_context(request_id="req-42", job="p5000_rq_1_x.json", aid="AID.FILE.READ.v1"):
        logging.getLogger("machina.worker").warning("calling tool with token %s", SECRET, extra=fields(step=3))
    payload = sock.recv(65536)
    got = parse_fields(payload)
    assert got["PRIORITY"] == "4"
    assert got["SYSLOG_IDENTIFIER"] == "machina-worker"
    assert got["MACHINA_REQUEST_ID"] == "req-42"
    assert got["MACHINA_JOB"] == "p5000_rq_1_x.json"
    assert got["MACHINA_AID"] == "AID.FILE.READ.v1"
    assert got["MACHINA_STEP"] == "3"
    assert got["MESSAGE"].startswith("machina.worker: calling tool with token <redacted>")
    assert SECRET.encode() not in payload
    stderr_file.seek(0)
    assert stderr_file.read() == ""  # the journal got it; nothing doubled on stderr


def test_bearer_tokens_in_context_fields_are_redacted(journal, stderr_file) -> None:
    sock, path = journal
    log.setup("machina-enqueued", stream=stderr_file, journal_socket=path)
    with log_context(request_id="Bearer abcdef0123456789"):
        logging.getLogger("machina.http").info("request")
    payload = sock.recv(65536)
    assert b"abcdef0123456789" not in payload
    assert parse_fields(payload)["MACHINA_REQUEST_ID"] == "Bearer <redacted>"


def test_exception_text_travels_in_one_field(journal, stderr_file) -> None:
    sock, path = journal
    log.setup("machina-toolhost", stream=stderr_file, journal_socket=path)
    try:
        raise ValueError(f"bad\nthing {SECRET}")
    except ValueError:
        logging.getLogger("machina.toolhost").exception("tool failed")
    got = parse_fields(sock.recv(65536))
    assert got["PRIORITY"] == "3"
    assert "ValueError" in got["MESSAGE"]
    assert SECRET not in got["MESSAGE"]


def test_multiline_values_use_the_binary_form() -> None:
    encoded = log.encode_journal_fields([("MESSAGE", "a\nb"), ("PRIORITY", "6")])
    assert encoded == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n" + b"PRIORITY=6\n"
    assert parse_fields(encoded) == {"MESSAGE": "a\nb", "PRIORITY": "6"}


def test_field_names_are_valid_journal_names() -> None:
    assert log.journal_field_name("request_id") == "MACHINA_REQUEST_ID"
    assert log.journal_field_name("run-id") == "MACHINA_RUN_ID"
    assert log.journal_field_name("x" * 80) is None


def test_a_record_too_big_for_a_datagram_goes_in_a_sealed_memfd(journal, stderr_file) -> None:
    sock, path = journal
    log.setup("machina-worker", secrets=[SECRET], stream=stderr_file, journal_socket=path)
    big = "x" * (4 * 1024 * 1024)  # far over the AF_UNIX datagram limit
    logging.getLogger("machina.worker").info("big %s %s", SECRET, big)
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
    assert data == b""
    level, kind, raw = ancdata[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(raw[: fds.itemsize])
    with os.fdopen(fds[0], "rb") as memfd:
        memfd.seek(0)  # journald maps it; the offset is the sender's
        payload = memfd.read()
    got = parse_fields(payload)
    assert big in got["MESSAGE"]
    assert SECRET not in got["MESSAGE"]


def test_falls_back_to_prefixed_stderr_when_the_socket_is_missing(tmp_path, stderr_file) -> None:
    log.setup("machina-worker", secrets=[SECRET], stream=stderr_file, journal_socket=str(tmp_path / "absent.sock"))
    logging.getLogger("machina.worker").error("lost %s", SECRET)
    stderr_file.seek(0)
    assert stderr_file.read() == "<3>machina.worker: lost <redacted>\n"


def test_falls_back_per_record_when_journald_goes_away(journal, stderr_file) -> None:
    sock, path = journal
    log.setup("machina-worker", stream=stderr_file, journal_socket=path)
    logging.getLogger("m").info("first")
    assert parse_fields(sock.recv(65536))["MESSAGE"] == "m: first"
    sock.close()
    os.unlink(path)
    logging.getLogger("m").info("second")
    stderr_file.seek(0)
    assert stderr_file.read() == "<6>m: second\n"


def test_journal_stream_of_another_file_means_plain_lines(tmp_path, journal, monkeypatch) -> None:
    """stderr redirected away from the journal (JOURNAL_STREAM inherited, but names another file)."""
    sock, path = journal
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    with open(tmp_path / "stderr", "w+") as stream:
        log.setup("machina-worker", stream=stream, journal_socket=path)
        logging.getLogger("m").info("hello")
        stream.seek(0)
        line = stream.read()
    assert " machina-worker[" in line and line.endswith(" INFO m: hello\n")
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(100)


@pytest.mark.parametrize("value", ["", "garbage", "1:", ":2", "1:2:3"])
def test_malformed_journal_stream_is_not_a_match(tmp_path, value) -> None:
    with open(tmp_path / "f", "w") as stream:
        assert not log.journal_stream_matches(stream, {"JOURNAL_STREAM": value})

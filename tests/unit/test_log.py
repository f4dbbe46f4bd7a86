"""Single-line, journald-friendly logs with context fields and secrets redacted wherever they appear."""

from __future__ import annotations

import io
import logging
import os
import re

import pytest

from machina import log


class FileStream(io.TextIOWrapper):
    """A real file as stderr (JOURNAL_STREAM names a device and inode, so it needs one)."""

    def getvalue(self) -> str:
        self.flush()
        with open(self.name, encoding="utf-8") as f:
            return f.read()


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch, tmp_path):
    def setup(journal: bool = False, secrets: tuple[str, ...] = ()) -> io.StringIO | FileStream:
        monkeypatch.setattr(log, "_redactor", log.Redactor())
        if journal:
            # stderr is the journal stream (JOURNAL_STREAM matches it) but journald's socket is away, so
            # lines fall back to the <N>-prefixed form; the structured path is tested in tests/ops.
            stream = FileStream(open(tmp_path / "stderr", "wb+"), encoding="utf-8")  # noqa: SIM115
            st = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
            log.setup("machina-test", "debug", secrets, stream=stream, journal_socket=str(tmp_path / "absent"))
            return stream
        string_stream = io.StringIO()
        log.setup("machina-test", "debug", secrets, stream=string_stream)
        return string_stream

    yield setup
    logging.getLogger().handlers.clear()


def test_plain_line_has_timestamp_program_pid_level_and_fields(capture) -> None:
    stream = capture()
    with log.log_context(request_id="rq-1"):
        logging.getLogger("machina.queue").info("claimed %s", "job", extra=log.fields(job="p5000_x", empty=None))
    line = stream.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z machina-test\[\d+\] INFO machina\.queue: claimed job "
        r"request_id=rq-1 job=p5000_x\n",
        line,
    ), line


def test_journal_stream_gives_syslog_priority_prefixes(capture) -> None:
    stream = capture(journal=True)
    logger = logging.getLogger("machina.x")
    logger.error("e")
    logger.warning("w")
    logger.info("i")
    logger.debug("d")
    logger.critical("c")
    assert stream.getvalue().splitlines() == [
        "<3>machina.x: e",
        "<4>machina.x: w",
        "<6>machina.x: i",
        "<7>machina.x: d",
        "<2>machina.x: c",
    ]


def test_multiline_messages_and_tracebacks_stay_on_one_line(capture) -> None:
    stream = capture()
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        logging.getLogger("m").exception("failed\nbadly")
    assert stream.getvalue().count("\n") == 1
    assert "failed\\nbadly" in stream.getvalue() and "ValueError" in stream.getvalue()


def test_configured_secrets_are_redacted_in_messages_args_fields_and_tracebacks(capture) -> None:
    stream = capture(secrets=("tok-SECRET-1", "hmac-SECRET-2"))
    logger = logging.getLogger("m")
    logger.info("token is tok-SECRET-1")
    logger.info("arg %s", "hmac-SECRET-2")
    with log.log_context(request_id="tok-SECRET-1"):
        logger.info("ctx")
    try:
        raise RuntimeError("boom with hmac-SECRET-2")
    except RuntimeError:
        logger.exception("oops")
    text = stream.getvalue()
    assert "SECRET" not in text
    assert text.count(log.REDACTED) >= 4  # the traceback shows the raising source line too


def test_bearer_tokens_are_redacted_even_when_not_configured(capture) -> None:
    stream = capture()
    logging.getLogger("m").warning("header Authorization: Bearer abc.def-123")
    assert "abc.def-123" not in stream.getvalue()
    assert "Bearer <redacted>" in stream.getvalue()


def test_lease_tokens_are_redacted_even_when_not_configured(capture) -> None:
    stream = capture()
    logging.getLogger("m").warning("job carried mlease_0123abcd4567ef89_s3cr-et_Value here")
    assert "s3cr-et_Value" not in stream.getvalue()
    assert "mlease_0123abcd4567ef89_<redacted> here" in stream.getvalue()


def test_bot_tokens_in_bot_api_urls_are_redacted_even_when_not_configured() -> None:
    redact = log.Redactor()
    url = "GET https://api.telegram.org/bot123456789:AAH-x_yZ0123456789abcdefghij/getUpdates failed"
    assert redact(url) == "GET https://api.telegram.org/bot<redacted>/getUpdates failed"


def test_every_kind_of_token_in_one_text_is_redacted() -> None:
    redact = log.Redactor(["hunter2"])
    text = "pw hunter2 Bearer tok.en-1 /bot42:ABCDEFGHIJKLMNOPQRSTUVWX/ mlease_ab12_secretpart end"
    assert redact(text) == ("pw <redacted> Bearer <redacted> /bot<redacted>/ mlease_ab12_<redacted> end")
    assert redact("") == ""
    assert redact("nothing to hide") == "nothing to hide"


def test_longer_secret_containing_a_shorter_one_is_fully_hidden() -> None:
    redact = log.Redactor(["abc", "abcdef"])
    assert redact("x abcdef y abc") == "x <redacted> y <redacted>"


def test_field_values_with_spaces_are_quoted(capture) -> None:
    stream = capture()
    logging.getLogger("m").info("x", extra=log.fields(path='a b"c'))
    assert stream.getvalue().rstrip().endswith('path="a b\\"c"')


def test_context_is_restored_after_the_block(capture) -> None:
    stream = capture()
    with log.log_context(request_id="r1"), log.log_context(aid="AID.X.v1"):
        logging.getLogger("m").info("inner")
    logging.getLogger("m").info("outer")
    inner, outer = stream.getvalue().splitlines()
    assert inner.endswith("request_id=r1 aid=AID.X.v1")
    assert outer.endswith("m: outer")

"""Logging for every Machina executable: one line per event on stderr, journald-friendly, secrets redacted.

Format outside systemd::

    2026-11-25T08:36:10.123Z machina-worker[1234] INFO machina.queue: claimed job=p5000_rq_... request_id=abc

Under systemd, when stderr is the journal stream (``JOURNAL_STREAM`` names stderr's device and inode, as
sd_journal_stream_fd(3) says to check), each event goes to journald through its native protocol instead:
one datagram to ``/run/systemd/journal/socket`` with ``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER`` and the
context fields as ``MACHINA_REQUEST_ID``, ``MACHINA_JOB``, ``MACHINA_AID`` (and any per-line field as
``MACHINA_<NAME>``), so ``journalctl MACHINA_REQUEST_ID=...`` follows one request across every unit.  When the
journal socket cannot be reached the line goes to stderr with a syslog priority prefix (``<3>`` error ...
``<7>`` debug) and without timestamp, program and pid, which journald adds itself.

Context fields (``request_id``, ``job``, ``aid``) come from :func:`log_context` and are appended to every
line logged inside it; per-call fields go in ``extra=fields(...)``.  Every configured secret, and anything
that looks like a bearer token, is replaced by ``<redacted>`` after formatting, so neither a message, an
argument nor a traceback can leak one, on stderr or in any journal field.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

CONTEXT_FIELDS = ("request_id", "job", "aid")
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("machina_log_context", default={})  # noqa: B039

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
#: A lease token (machina.toolhost.leases: mlease_<id>_<secret>): its secret approves a tool call.
_LEASE_SECRET = re.compile(r"(mlease_[0-9a-f]+_)[A-Za-z0-9_-]+")
#: A Telegram bot token inside a Bot API URL (.../bot<id>:<secret>/method): redacted even when not configured.
_BOT_TOKEN = re.compile(r"(/bot)[0-9]{1,20}:[A-Za-z0-9_-]{20,}")
_NEEDS_QUOTES = re.compile(r"[\s\"=]")
REDACTED = "<redacted>"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
_FIELD_NAME = re.compile(r"[A-Z0-9_]+")


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (request_id=, job=, aid=) to every line logged inside the block."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def fields(**values: Any) -> dict[str, Any]:
    """``logger.info("claimed", extra=fields(job=name))``: fields for one line."""
    return {"machina_fields": {k: v for k, v in values.items() if v is not None}}


def current_fields(record: logging.LogRecord | None = None) -> dict[str, str]:
    merged = dict(_context.get())
    if record is not None:
        merged.update({k: str(v) for k, v in getattr(record, "machina_fields", {}).items()})
    return merged


class Redactor:
    """Replaces secret values in text.  Longest first, so a secret containing another is fully hidden."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if s}
        self._secrets = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not text:  # most errors a run records are empty: three regex passes for nothing, on every job
            return text
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "/bot" in text:
            text = _BOT_TOKEN.sub(r"\1" + REDACTED, text)
        text = _BEARER.sub(r"\1" + REDACTED, text)
        if "mlease_" in text:
            text = _LEASE_SECRET.sub(r"\1" + REDACTED, text)
        return text


def _quote(value: str) -> str:
    if value == "" or _NEEDS_QUOTES.search(value):
        return '"' + _one_line(value).replace('"', '\\"') + '"'
    return value


def _one_line(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class LineFormatter(logging.Formatter):
    def __init__(self, program: str, journal: bool, redactor: Redactor) -> None:
        super().__init__()
        self.program = program
        self.journal = journal
        self.redact = redactor

    def body(self, record: logging.LogRecord) -> str:
        """``logger: message key=value ...`` on one line, not yet redacted."""
        parts = [_one_line(record.getMessage())]
        parts += [f"{k}={_quote(v)}" for k, v in current_fields(record).items()]
        if record.exc_info:
            parts.append("exc=" + _quote(self.formatException(record.exc_info)))
        return f"{record.name}: " + " ".join(parts)

    def format(self, record: logging.LogRecord) -> str:
        body = self.body(record)
        if self.journal:
            line = f"<{syslog_priority(record)}>{body}"
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            millis = int(record.msecs)
            line = f"{stamp}.{millis:03d}Z {self.program}[{os.getpid()}] {record.levelname} {body}"
        return self.redact(line)


def syslog_priority(record: logging.LogRecord) -> int:
    return _SYSLOG_PRIORITY.get(record.levelno, 6)


# --- journald's native protocol (systemd.journal-fields(7), "Native Journal Protocol") ---------------------


def journal_field_name(key: str) -> str | None:
    """``request_id`` -> ``MACHINA_REQUEST_ID``; None for a key that cannot be a journal field name."""
    name = "MACHINA_" + re.sub(r"[^A-Z0-9]", "_", key.upper())
    return name if _FIELD_NAME.fullmatch(name) and len(name) <= 64 else None


def encode_journal_fields(fields: Iterable[tuple[str, str]]) -> bytes:
    """Serialise fields for the journal socket: ``KEY=value\\n``, or the binary form for values with newlines."""
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def journal_stream_matches(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM=dev:ino`` matches it).

    A service whose stderr was redirected elsewhere still inherits JOURNAL_STREAM, so the variable alone
    proves nothing (sd_journal_stream_fd(3)).
    """
    raw = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = raw.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return bool(raw) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


class JournalHandler(logging.Handler):
    """Sends each record to journald as structured fields; hands it to ``fallback`` when journald is away.

    Every value is redacted like the stderr line.  A record too large for one datagram goes in a sealed
    memfd passed over the socket, as the protocol allows.
    """

    def __init__(
        self,
        program: str,
        formatter: LineFormatter,
        redactor: Redactor,
        fallback: logging.Handler,
        socket_path: str = JOURNAL_SOCKET,
    ) -> None:
        super().__init__()
        self.program = program
        self.line_formatter = formatter
        self.redact = redactor
        self.fallback = fallback
        self.socket_path = socket_path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        fields = [
            ("MESSAGE", self.line_formatter.body(record)),
            ("PRIORITY", str(syslog_priority(record))),
            ("SYSLOG_IDENTIFIER", self.program),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
            ("MACHINA_LOGGER", record.name),
        ]
        for key, value in current_fields(record).items():
            name = journal_field_name(key)
            if name is not None:
                fields.append((name, value))
        return [(name, self.redact(value)) for name, value in fields]

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = encode_journal_fields(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self._send(payload)
        except OSError:
            self.fallback.handle(record)  # journald away (restarting, or not there at all): stderr keeps the line

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.sendto(payload, self.socket_path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        fd = os.memfd_create("machina-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(
                fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            )
            self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))], 0, self.socket_path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sock.close()
        super().close()


def journal_available(socket_path: str = JOURNAL_SOCKET) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(socket_path).st_mode)
    except OSError:
        return False


_redactor = Redactor()


def setup(
    program: str,
    level: str = "info",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> None:
    """Send all logging to stderr as single lines, or to journald when stderr is its stream.

    Call once, early, from each executable's main (``bootstrap`` does).
    """
    _redactor.add(secrets)
    out = stream or sys.stderr
    journal = journal_stream_matches(out)
    stream_handler = logging.StreamHandler(out)
    formatter = LineFormatter(program, journal, _redactor)
    stream_handler.setFormatter(formatter)
    handler: logging.Handler = stream_handler
    if journal and journal_available(journal_socket):
        handler = JournalHandler(program, formatter, _redactor, stream_handler, journal_socket)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, JournalHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def redact(text: str) -> str:
    """Redact configured secrets from text that leaves the process by another way (an HTTP error body)."""
    return _redactor(text)


def add_secrets(secrets: Iterable[str]) -> None:
    _redactor.add(secrets)

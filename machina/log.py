"""Logging for every Machina executable: one line per event on stderr, journald-friendly, secrets redacted.

Format outside systemd::

    2026-11-25T08:36:10.123Z machina-worker[1234] INFO machina.queue: claimed job=p5000_rq_... request_id=abc

Under systemd (``JOURNAL_STREAM`` set) the timestamp, program and pid are left to journald and the line
starts with a syslog priority prefix (``<3>`` error ... ``<7>`` debug) so journald records the level.

Context fields (``request_id``, ``job``, ``aid``) come from :func:`log_context` and are appended to every
line logged inside it; per-call fields go in ``extra=fields(...)``.  Every configured secret, and anything
that looks like a bearer token, is replaced by ``<redacted>`` after formatting, so neither a message, an
argument nor a traceback can leak one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
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
_NEEDS_QUOTES = re.compile(r"[\s\"=]")
REDACTED = "<redacted>"


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
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _BEARER.sub(r"\1" + REDACTED, text)


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

    def format(self, record: logging.LogRecord) -> str:
        parts = [_one_line(record.getMessage())]
        parts += [f"{k}={_quote(v)}" for k, v in current_fields(record).items()]
        if record.exc_info:
            parts.append("exc=" + _quote(self.formatException(record.exc_info)))
        body = " ".join(parts)
        if self.journal:
            line = f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{record.name}: {body}"
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            millis = int(record.msecs)
            line = f"{stamp}.{millis:03d}Z {self.program}[{os.getpid()}] {record.levelname} {record.name}: {body}"
        return self.redact(line)


_redactor = Redactor()


def setup(program: str, level: str = "info", secrets: Iterable[str] = (), stream: IO[str] | None = None) -> None:
    """Send all logging to stderr as single lines.  Call once, early, from each executable's main."""
    _redactor.add(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(LineFormatter(program, journal, _redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def redact(text: str) -> str:
    """Redact configured secrets from text that leaves the process by another way (an HTTP error body)."""
    return _redactor(text)


def add_secrets(secrets: Iterable[str]) -> None:
    _redactor.add(secrets)

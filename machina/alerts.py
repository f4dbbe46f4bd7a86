"""The operator alert spool: notices for a person, written by daemons and sent by a front end.

Two tiers (OPERATIONS.md "Autonomic heartbeat alerts"): ``stream`` (routine: a burst started or ended, a level
failed) and ``milestone`` (a person should look: a reward regression and its rollback, a self-made change
rejected by the regression gate).  Each alert is one small JSON file in ``state/alerts/``, written atomically, so
a writer and a reader in different processes never see half an alert and a crash loses at most the alert being
written.  ``machina-telegram`` sends and removes them; without a front end the spool stays bounded: past
``SPOOL_CAP`` files the oldest stream alerts go first, milestones only when nothing else is left.

The text is ours (never model output verbatim): callers write what happened, not what a model said.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from machina.clock import Clock
from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)

STREAM, MILESTONE = "stream", "milestone"
TIERS = (STREAM, MILESTONE)
SPOOL_DIR = "alerts"
SPOOL_CAP = 200
TEXT_CAP = 2000
SUFFIX = ".json"


@dataclass(frozen=True)
class Alert:
    tier: str
    text: str
    source: str
    at: float


def spool_dir(state_dir: str) -> str:
    return os.path.join(state_dir, SPOOL_DIR)


def post(state_dir: str, tier: str, text: str, *, source: str, clock: Clock, fsync: bool) -> str:
    """Spool one alert; returns its file name.  Keeps the spool within ``SPOOL_CAP``."""
    if tier not in TIERS:
        raise ValueError(f"alert tier {tier!r}: expected one of {', '.join(TIERS)}")
    directory = spool_dir(state_dir)
    ensure_dir(directory)
    at = clock.time()
    # The name sorts by time; the tier in it lets the cap drop stream alerts without reading them.
    name = f"{int(at * 1e6):020d}-{tier}-{secrets.token_hex(4)}{SUFFIX}"
    doc = {"tier": tier, "text": text[:TEXT_CAP], "source": source, "at": at}
    write_atomic(os.path.join(directory, name), json.dumps(doc).encode() + b"\n", fsync=fsync)
    _enforce_cap(directory)
    return name


def pending(state_dir: str) -> Iterator[tuple[str, Alert]]:
    """(path, alert) oldest first; an unreadable file is set aside as ``.bad`` and skipped."""
    directory = spool_dir(state_dir)
    for name in _names(directory):
        path = os.path.join(directory, name)
        try:
            yield path, _read(path)
        except FileNotFoundError:
            continue  # sent by another reader meanwhile
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("alert %s is unreadable (%s): set aside as .bad", name, exc)
            with contextlib.suppress(OSError):
                os.replace(path, path + ".bad")


def sent(path: str) -> None:
    """The alert reached its reader: remove it."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read(path: str) -> Alert:
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    if doc["tier"] not in TIERS or not isinstance(doc["text"], str):
        raise ValueError("not an alert")
    return Alert(doc["tier"], doc["text"], str(doc.get("source", "")), float(doc["at"]))


def _names(directory: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and not n.startswith("."))
    except FileNotFoundError:
        return []


def _enforce_cap(directory: str) -> None:
    names = _names(directory)
    excess = len(names) - SPOOL_CAP
    if excess <= 0:
        return
    streams = [n for n in names if f"-{STREAM}-" in n]
    victims = (streams + [n for n in names if n not in set(streams)])[:excess]
    for name in victims:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    log.warning("alert spool over %d: dropped the %d oldest (stream first)", SPOOL_CAP, len(victims))

"""Job file names (DESIGN.md section 3), parsed and built in one place.

A job's *name* is the file name it gets in ``inbox/`` when it is enqueued, and the name every client sees::

    p{priority:04d}_rq_{epoch_ms:013d}_{random}[_rid{fnv1a32(request_id):08x}].json

``priority`` 0..9999 (lower runs first); ``epoch_ms`` the enqueue time, zero-padded so that names sort as
numbers do; ``random`` 10 hex digits, the first 4 a per-process sequence within the millisecond (FIFO
inside one enqueuer) and the last 6 random.  So **the lexicographic order of names is the claim order**.
The *stem* is the name without ``.json``.

Later attempts keep the stem and add ``.a{N}`` (N >= 2), so every attempt's file is unique and a stale
claim can never be completed by mistake::

    inbox/ processing/ done/ failed/ dlq/   {stem}.json  (attempt 1)   {stem}.a{N}.json  (attempt N)
    retry/                                  retry_{due_epoch_ms:013d}_{stem}.a{N}.json   (N = next attempt)
    out/                                    {stem}.attempt{N}.result.json
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass, replace
from functools import cached_property

from machina.clock import Clock

PRIORITY_MIN = 0
PRIORITY_MAX = 9999
DEFAULT_PRIORITY = 5000
MAX_ATTEMPT = 999_999

_STEM = r"p(?P<prio>\d{4})_rq_(?P<ms>\d{13})_(?P<rand>[0-9a-f]{10})(?:_rid(?P<rid>[0-9a-f]{8}))?"
_ATTEMPT = r"(?:\.a(?P<attempt>[2-9]|[1-9]\d{1,5}))?"
_NAME_RE = re.compile(_STEM + r"(?:\.json)?")
_FILE_RE = re.compile(_STEM + _ATTEMPT + r"\.json")
_RETRY_RE = re.compile(r"retry_(?P<due>\d{13})_" + _STEM + r"\.a(?P<attempt>[2-9]|[1-9]\d{1,5})\.json")
_RESULT_RE = re.compile(_STEM + r"\.attempt(?P<attempt>[1-9]\d{0,5})\.result\.json")

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes (the ``_rid`` suffix: lets an operator grep for a request_id)."""
    value = _FNV32_OFFSET
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


@dataclass(frozen=True)
class JobRef:
    """One attempt of one job, as its file names say (claim order is the order of ``file`` strings)."""

    priority: int
    epoch_ms: int
    rand: str
    rid_hash: str | None = None
    attempt: int = 1

    @cached_property
    def stem(self) -> str:  # cached: a job's names are asked for several times on every transition
        rid = f"_rid{self.rid_hash}" if self.rid_hash else ""
        return f"p{self.priority:04d}_rq_{self.epoch_ms:013d}_{self.rand}{rid}"

    @cached_property
    def name(self) -> str:
        """The job's name: its attempt-1 file name, what enqueue returned."""
        return self.stem + ".json"

    @property
    def file(self) -> str:
        """This attempt's file name in inbox/, processing/, done/, failed/ or dlq/."""
        return self.name if self.attempt == 1 else f"{self.stem}.a{self.attempt}.json"

    def retry_file(self, due_ms: int) -> str:
        return f"retry_{due_ms:013d}_{self.stem}.a{self.attempt}.json"

    def result_file(self, attempt: int | None = None) -> str:
        return f"{self.stem}.attempt{attempt or self.attempt}.result.json"

    def next_attempt(self) -> JobRef:
        return replace(self, attempt=self.attempt + 1)

    def with_attempt(self, attempt: int) -> JobRef:
        return replace(self, attempt=attempt)


def new_ref(priority: int, epoch_ms: int, seq: int, rand: int, request_id: str | None) -> JobRef:
    rid = f"{fnv1a32(request_id):08x}" if request_id is not None else None
    return JobRef(priority, epoch_ms, f"{seq & 0xFFFF:04x}{rand & 0xFFFFFF:06x}", rid)


def _ref(match: re.Match[str], attempt: str | None) -> JobRef:
    return JobRef(int(match["prio"]), int(match["ms"]), match["rand"], match["rid"], int(attempt or 1))


def parse_name(name: str) -> JobRef | None:
    """A job name as a client gives it (with or without ``.json``); None when it is not one."""
    match = _NAME_RE.fullmatch(name)
    return _ref(match, None) if match else None


def parse_file(file: str) -> JobRef | None:
    """A state file name (``{stem}.json`` or ``{stem}.a{N}.json``); None when it is not one."""
    match = _FILE_RE.fullmatch(file)
    return _ref(match, match["attempt"]) if match else None


def parse_retry(file: str) -> tuple[int, JobRef] | None:
    """``retry_{due}_{stem}.a{N}.json`` as (due_ms, ref of attempt N); None when it is not one."""
    match = _RETRY_RE.fullmatch(file)
    return (int(match["due"]), _ref(match, match["attempt"])) if match else None


def parse_result(file: str) -> JobRef | None:
    match = _RESULT_RE.fullmatch(file)
    return _ref(match, match["attempt"]) if match else None


def is_candidate(file: str) -> bool:
    """Cheap filter for a directory scan: files being written (dot names, ``.tmp``, ``.part``) are skipped."""
    return not file.startswith(".") and not file.endswith((".tmp", ".part", ".swp"))


class JobNamer:
    """Job names from one process, strictly increasing within a millisecond (a sequence, then the next ms),
    with random bits so that processes and hosts naming jobs at the same moment do not collide."""

    def __init__(self, clock: Clock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0

    def next(self, priority: int, request_id: str | None) -> JobRef:
        with self._lock:
            ms = max(int(self.clock.time() * 1000), self._last_ms)
            if ms == self._last_ms:
                self._seq += 1
                if self._seq > 0xFFFF:
                    ms, self._seq = ms + 1, 0
            else:
                self._seq = 0
            self._last_ms = ms
            seq = self._seq
        return new_ref(priority, ms, seq, self.rng.getrandbits(24), request_id)

"""Writing a run log: ``logs/run_<run_id>.jsonl``, one canonical, hash-chained JSON line per event.

Each event is written as it happens (one ``write`` of one whole line on an O_APPEND descriptor), so a run
that dies mid-way leaves a valid prefix that shows how far it got.  The writer holds an exclusive
``flock`` on the file for the run's lifetime: ``machina audit verify`` uses it to tell a run still in
progress from one whose process died.  With ``fsync`` (MACHINA_WAL_FSYNC, on in the prod profile) the
file and its directory are synced when the run closes.
"""

from __future__ import annotations

import fcntl
import os
import re
from typing import Any

from machina.audit.chain import GENESIS, Chain
from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import PRIVATE_FILE, fsync_dir

LOG_FORMAT = 1
RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"

# Every event kind a run log may hold; the verifier refuses others.
EVENTS = (
    "start",
    "menu",
    "menu_extended",
    "selection",
    "invalid_pick",
    "tool",
    "policy_breaker",
    "breaker",
    "done",
)


def log_path(logs_dir: str, run_id: str) -> str:
    if not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise ValueError(f"run id {run_id!r} is not a safe file-name part (expected {RUN_ID_PATTERN})")
    return os.path.join(logs_dir, f"run_{run_id}.jsonl")


class RunLogWriter:
    """Appends sealed events to one new run log.  Not thread-safe: one run, one thread."""

    def __init__(
        self,
        path: str,
        *,
        run_id: str,
        request_id: str,
        chain: Chain,
        fsync: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.request_id = request_id
        self.chain = chain
        self.fsync = fsync
        self.clock = clock
        self.seq = 0
        self.last_hash = GENESIS
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE
        )
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Seal and append one event; returns the sealed record."""
        if event not in EVENTS:
            raise ValueError(f"unknown run-log event {event!r}")
        if self._fd is None:
            raise ValueError(f"{self.path}: run log already closed")
        record = {
            **fields,
            "event": event,
            "seq": self.seq,
            "ts": round(self.clock.time(), 6),
            "run_id": self.run_id,
            "request_id": self.request_id,
        }
        sealed, encoded = self.chain.seal_line(self.last_hash, record)
        line = encoded + b"\n"
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        self.seq += 1
        self.last_hash = sealed["chain_hash"]
        return sealed

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)  # releases the flock
        if self.fsync:
            fsync_dir(os.path.dirname(self.path) or ".")

    def __enter__(self) -> RunLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

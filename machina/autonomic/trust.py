"""Trust scores and pruning (OPERATIONS.md "Trust Scoring").

``trust = 2^(-age_days / 7) x quality`` with quality 1.0 for a success and 0.3 for a failure.  L4 Hygiene
prunes experiences and skills below 0.1 into ``memory/archive/YYYYMMDD/<stream>.pruned`` (durable before
the stream is cut), never into nothing.  The stream is rewritten by streaming under its lock: neither the
stream nor the archive is ever held in memory whole.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from machina.clock import Clock
from machina.fsutil import ensure_dir, fsync_dir
from machina.memory.streams import archive_path, locked, read_lines, stream_path

HALF_LIFE_DAYS = 7.0
QUALITY_SUCCESS = 1.0
QUALITY_FAILURE = 0.3
PRUNE_BELOW = 0.1
PRUNED_STREAMS = ("experiences", "skills")


def trust(age_seconds: float, success: bool) -> float:
    age_days = max(0.0, age_seconds) / 86400
    return float(2 ** (-age_days / HALF_LIFE_DAYS)) * (QUALITY_SUCCESS if success else QUALITY_FAILURE)


def succeeded(stream: str, record: dict[str, Any]) -> bool:
    if stream == "skills":
        used, ok = record.get("used_count") or 0, record.get("success_count") or 0
        return not used or ok * 2 >= used  # an unproven skill is not yet a failure
    return record.get("success") is True


@dataclass(frozen=True)
class Pruning:
    stream: str
    kept: int
    pruned: int
    archived_to: str


def prune(memory_dir: str, stream: str, clock: Clock, *, threshold: float = PRUNE_BELOW) -> Pruning:
    path = stream_path(memory_dir, stream)
    if not os.path.exists(path):
        return Pruning(stream, 0, 0, "")
    now = clock.time()
    day = time.strftime("%Y%m%d", time.gmtime(now))
    target = archive_path(memory_dir, f"{stream}.jsonl.pruned", day)
    fresh = f"{path}.prune.tmp"
    kept = pruned = 0
    with locked(path) as lock_fd:
        mode = os.fstat(lock_fd).st_mode & 0o777
        ensure_dir(os.path.dirname(target))
        try:
            with open(fresh, "wb") as keep, open(target, "wb") as archive:
                for line in read_lines(path):
                    entry = line.entry or {}
                    record = entry["record"] if isinstance(entry.get("record"), dict) else {}
                    ts = entry.get("ts")
                    old = isinstance(ts, int | float) and trust(now - ts, succeeded(stream, record)) < threshold
                    (archive if old and line.entry is not None else keep).write(line.raw)
                    pruned += int(old and line.entry is not None)
                    kept += int(not (old and line.entry is not None))
                for handle in (keep, archive):
                    handle.flush()
                    os.fsync(handle.fileno())
            if not pruned:
                os.unlink(target)
                os.unlink(fresh)
                return Pruning(stream, kept, 0, "")
            fsync_dir(os.path.dirname(target))  # the archive is durable before the stream loses a line
            os.chmod(fresh, mode)
            os.replace(fresh, path)
            fsync_dir(memory_dir)
        except BaseException:
            for leftover in (fresh, target):  # a half-written archive would tell a wrong story
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            raise
    return Pruning(stream, kept, pruned, target)

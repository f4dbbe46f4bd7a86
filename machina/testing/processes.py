"""Looking for processes from a test: did anything a tool started outlive it?"""

from __future__ import annotations

import os
import time


def processes_with_arg(arg: str, settle_s: float = 3.0) -> list[int]:
    """Live (not zombie) processes with ``arg`` as one of their arguments, after giving them ``settle_s``
    to disappear (a killed sandbox's processes go away asynchronously)."""
    deadline = time.monotonic() + settle_s
    while True:
        found = [pid for pid in _pids() if _has_arg(pid, arg.encode()) and not _zombie(pid)]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _has_arg(pid: int, arg: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return arg in handle.read().split(b"\0")
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

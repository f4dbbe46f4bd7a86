"""When a person last talked to the agent: ``state/user_activity``'s modification time.

The chat and Telegram front ends call :func:`touch` on every message; the autonomic engine reads it to
tell idle time (levels that wait for idleness, burst exit on activity).  A file time, not a socket, so
either side can restart without the other noticing.
"""

from __future__ import annotations

import contextlib
import os

ACTIVITY_FILE = "user_activity"


def touch(state_dir: str) -> None:
    path = os.path.join(state_dir, ACTIVITY_FILE)
    with contextlib.suppress(OSError):  # activity is a hint; failing to record it must not fail a chat
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.utime(fd)
        finally:
            os.close(fd)


def last_activity(state_dir: str) -> float:
    try:
        return os.stat(os.path.join(state_dir, ACTIVITY_FILE)).st_mtime
    except OSError:
        return 0.0

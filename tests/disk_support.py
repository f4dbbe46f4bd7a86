"""Helpers for the full-disk and read-only tests: a private tmpfs, filled to the last byte."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess


def tmpfs_unavailable() -> str | None:
    """None when this process may mount a tmpfs in a private mount namespace; else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "needs root to mount a private tmpfs"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot mount tmpfs in a private mount namespace: {probe.stderr.strip()}"
    return None


def fill(path: str | os.PathLike[str]) -> None:
    """Write zeros to ``path`` until the file system is full (ENOSPC); any other error is raised."""
    with open(path, "wb", buffering=0) as handle:  # unbuffered: nothing left to fail at close
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def queue_listing(root: str | os.PathLike[str]) -> dict[str, list[str]]:
    """What is in the queue's inbox/ and tmp/: both must stay empty of half-written jobs."""
    return {state: sorted(os.listdir(os.path.join(root, "queue", state))) for state in ("inbox", "tmp")}

"""Child process for the full and read-only disk test of machina-enqueued; runs inside ``unshare --mount``.

    unshare --mount --propagation private python enqueued_diskkit.py MOUNTDIR LOGDIR

Mounts a 1 MiB tmpfs on MOUNTDIR (private to this mount namespace, gone with it), starts the real daemon
on a root there (fsync on), then fills the file system and later makes the queue read-only, posting jobs at
each stage.  Prints one JSON object of observations for the parent test to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import requests
from enqueued_kit import TOKEN, Daemon, bearer

from machina.root import init_root
from tests.disk_support import fill, queue_listing

BIG = {"goal_id": "goal.DISK.v1", "inputs": {"blob": "x" * 16384}}


def post(daemon: Daemon, job: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(daemon.url("/enqueue"), json=job, headers=bearer(), timeout=30)
    return {"status": answer.status_code, "body": answer.json(), "retry_after": answer.headers.get("Retry-After")}


def main() -> int:
    mount, logs = Path(sys.argv[1]), Path(sys.argv[2])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    root = mount / "root"
    init_root(str(root))
    daemon = Daemon(root, logs, {"MACHINA_API_TOKEN": TOKEN, "MACHINA_WAL_FSYNC": "1"})
    daemon.start()
    report: dict[str, Any] = {}
    try:
        report["before"] = post(daemon, {"goal_id": "goal.DISK.v1"})
        fill(mount / "filler")
        report["full"] = post(daemon, BIG)
        report["full_small"] = post(daemon, {"goal_id": "goal.DISK.v1", "inputs": {"n": 1}, "request_id": "r-full"})
        report["full_listing"] = queue_listing(root)
        report["full_health"] = requests.get(daemon.url("/health"), timeout=10).status_code
        report["full_stats"] = requests.get(daemon.url("/stats"), headers=bearer(), timeout=10).status_code
        os.unlink(mount / "filler")
        report["after"] = post(daemon, {"goal_id": "goal.DISK.v1", "inputs": {"n": 1}, "request_id": "r-full"})
        # The daemon holds its WAL segment open for writing, so the tmpfs itself cannot be remounted
        # read-only; a read-only bind mount over queue/ makes every new write there fail with EROFS, as a
        # file system that went read-only under a running daemon would.
        queue = str(root / "queue")
        subprocess.run(["mount", "--bind", queue, queue], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", queue], check=True)
        report["readonly"] = post(daemon, {"goal_id": "goal.DISK.v1", "inputs": {"n": 2}})
        report["readonly_listing"] = queue_listing(root)
        report["readonly_job"] = requests.get(
            daemon.url("/jobs/" + report["before"]["body"]["queued"]), headers=bearer(), timeout=10
        ).json()
        report["metrics"] = requests.get(daemon.url("/metrics"), headers=bearer(), timeout=10).text
        report["stop_rc"] = daemon.stop()
    finally:
        daemon.kill()
    report["log"] = daemon.log()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

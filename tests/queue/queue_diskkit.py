"""Child process for the full and read-only file system tests; runs inside ``unshare --mount``.

    unshare --mount --propagation private python queue_diskkit.py DIR

Mounts a 1 MiB tmpfs on DIR (private to this mount namespace, gone when the process ends), fills it,
then remounts it read-only, trying the queue and the ``machina enqueue`` tool at each stage.  Prints one
JSON object of observations for the parent test to check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from machina.queue import FileQueue, QueueConfig, QueueNotWritable
from machina.root import init_root
from tests.disk_support import fill, queue_listing

CHECKOUT = Path(__file__).resolve().parents[2]
BIG = {"goal_id": "goal.DISK.v1", "inputs": {"blob": "x" * 16384}}


def cli_enqueue(root: str, body: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MACHINA_")}
    env.update(MACHINA_ROOT=root, MACHINA_ENV_FILE="/dev/null", MACHINA_WAL_FSYNC="1")
    proc = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" enqueue', str(CHECKOUT / "bin" / "machina")],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return {"rc": proc.returncode, "stdout": proc.stdout.strip(), "stderr": proc.stderr.strip()}


def try_enqueue(queue: FileQueue, body: dict[str, Any], rid: str) -> dict[str, Any]:
    try:
        result = queue.enqueue(body, request_id=rid)
        return {"ok": True, "name": result.name, "deduplicated": result.deduplicated}
    except QueueNotWritable as exc:
        return {"ok": False, "errno": exc.errno_name, "message": str(exc)}


def main() -> int:
    mount = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mount], check=True)
    root = os.path.join(mount, "root")
    init_root(root)
    report: dict[str, Any] = {}
    queue = FileQueue(root, QueueConfig(fsync=True, wal_crc32=True))
    report["before"] = try_enqueue(queue, {"goal_id": "goal.DISK.v1"}, "before")
    running = try_enqueue(queue, {"goal_id": "goal.DISK.v1", "_queue": {"priority": 1}}, "running")
    claim = queue.claim("disk-worker")
    assert claim is not None and claim.name == running["name"]
    fill(os.path.join(mount, "filler"))
    try:
        queue.complete(claim, {"blob": "z" * 16384})
        report["full_complete"] = {"ok": True}
    except QueueNotWritable as exc:
        report["full_complete"] = {"ok": False, "errno": exc.errno_name}
    report["full_complete_state"] = queue.job_status(claim.name).state
    report["full"] = try_enqueue(queue, BIG, "during")
    report["full_small"] = try_enqueue(queue, {"goal_id": "goal.DISK.v1", "inputs": {"n": 1}}, "small")
    report["full_listing"] = queue_listing(root)
    report["full_cli"] = cli_enqueue(root, BIG)
    os.unlink(os.path.join(mount, "filler"))
    report["after"] = try_enqueue(queue, BIG, "during")
    queue.complete(claim, {"blob": "z" * 16384})
    report["after_complete_state"] = queue.job_status(claim.name).state
    queue.close()
    subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
    readonly = FileQueue(root, QueueConfig(fsync=True))
    report["readonly"] = try_enqueue(readonly, {"goal_id": "goal.DISK.v1"}, "ro")
    report["readonly_listing"] = queue_listing(root)
    report["readonly_jobs"] = [job.name for job in readonly.list_jobs("inbox")]
    report["readonly_cli"] = cli_enqueue(root, {"goal_id": "goal.DISK.v1"})
    readonly.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Child process for the kill -9 tests: runs one queue role and dies by SIGKILL at a named point.

    python queue_crashkit.py ROOT MODE [--point NAME --after K] [--count N] [--worker ID] [--fsync]

Modes: ``enqueue`` (N jobs; prints ``ACK <name>`` once each is acknowledged), ``batch`` (N jobs in one
``enqueue_batch``; ``ACK`` for each once it returns), ``work`` (claim and complete
until the inbox is empty; ``DONE <name>``), ``fail`` (claim and fail retryably), ``recover`` (recover dead
claims), ``serve`` (claim with a timeout forever, complete each job after a short pause),
``checkpoint-loop`` (write checkpoints forever; ``CKPT`` after each).  With ``--point`` the K-th time the
queue passes that crash point (machina.queue.faults) the process sends itself SIGKILL; at ``wal.append``
it first writes half of the record, leaving a torn tail.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from machina.queue import FileQueue, QueueConfig, faults
from machina.queue.request import validate_request


def arm(point: str, after: int) -> None:
    hits = 0

    def hook(name: str, context: dict[str, Any]) -> None:
        nonlocal hits
        if name != point:
            return
        hits += 1
        if hits < after:
            return
        if name == "wal.append":
            line = context["line"]
            os.write(context["fd"], line[: len(line) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    faults.hook = hook


def say(*words: str) -> None:
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("mode")
    parser.add_argument("--point")
    parser.add_argument("--after", type=int, default=1)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--worker", default="crash-worker")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    queue = FileQueue(
        args.root, QueueConfig(fsync=args.fsync, wal_crc32=True, scan_ms=20, retry_min_ms=0, retry_max_ms=0)
    )
    if args.point:
        arm(args.point, args.after)
    if args.mode == "enqueue":
        for i in range(args.count):
            say("ACK", queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"i": i}}, request_id=f"job-{i}").name)
    elif args.mode == "batch":  # machina-enqueued's path: one enqueue_batch, answered once it returns
        batch = [
            validate_request({"goal_id": "goal.CRASH.v1", "inputs": {"i": i}}, f"job-{i}") for i in range(args.count)
        ]
        for result in queue.enqueue_batch(batch):
            say("ACK", result.name)  # type: ignore[union-attr]
    elif args.mode in ("work", "fail"):
        while (claim := queue.claim(args.worker)) is not None:
            if args.mode == "work":
                queue.complete(claim, {"by": args.worker})
                say("DONE", claim.name)
            else:
                queue.fail(claim, "crash test failure")
                say("FAILED", claim.name)
    elif args.mode == "recover":
        for name in queue.recover():
            say("RECOVERED", name)
    elif args.mode == "serve":
        say("READY")
        while True:
            claim = queue.claim(args.worker, timeout=1.0)
            if claim is not None:
                time.sleep(args.pause)
                queue.complete(claim, {"by": args.worker})
                say("DONE", claim.name)
    elif args.mode == "checkpoint-loop":
        while True:
            queue.checkpoint()
            say("CKPT")
    else:
        parser.error(f"unknown mode {args.mode}")
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Child process for the PostgreSQL kill -9 tests: one queue role on the database at URL, until killed.

    python queue_crashkit_pg.py URL MODE [--worker ID] [--count N] [--pause S] [--fsync]

``serve``: claim (waiting) and complete each job after ``--pause`` seconds, printing ``DONE <name>``; a
database that is away (QueueUnavailable) is waited out as machina-worker waits it out, and a claim taken
away meanwhile (ClaimLost) is dropped.  ``enqueue``: N jobs with request ids ``job-<i>``, printing
``ACK <name>`` once each is acknowledged; one refused because the database is away is sent again with
the same request id until it is acknowledged.
"""

from __future__ import annotations

import argparse
import sys
import time

from machina.queue import ClaimLost, QueueConfig, QueueUnavailable
from machina.queue.pg import PgQueue

RETRY_S = 0.1


def say(*words: str) -> None:
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def open_queue(url: str, fsync: bool) -> PgQueue:
    while True:
        try:
            return PgQueue(url, QueueConfig(url=url, fsync=fsync, scan_ms=20, retry_min_ms=0, retry_max_ms=0))
        except QueueUnavailable:
            time.sleep(RETRY_S)


def serve(queue: PgQueue, worker: str, pause: float) -> None:
    say("READY")
    while True:
        try:
            claim = queue.claim(worker, timeout=1.0)
        except QueueUnavailable:
            time.sleep(RETRY_S)
            continue
        if claim is None:
            continue
        time.sleep(pause)
        while True:
            try:
                queue.complete(claim, {"by": worker})
                say("DONE", claim.name)
                break
            except ClaimLost:
                say("LOST", claim.name)
                break
            except QueueUnavailable:
                time.sleep(RETRY_S)


def enqueue(queue: PgQueue, count: int, pause: float) -> None:
    for i in range(count):
        while True:
            try:
                result = queue.enqueue({"goal_id": "goal.CRASH.v1", "inputs": {"i": i}}, request_id=f"job-{i}")
                break
            except QueueUnavailable:
                say("UNAVAILABLE", str(i))
                time.sleep(RETRY_S)
        say("ACK", result.name)
        time.sleep(pause)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("mode", choices=("serve", "enqueue"))
    parser.add_argument("--worker", default="crash-worker")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()
    queue = open_queue(args.url, args.fsync)
    if args.mode == "serve":
        serve(queue, args.worker, args.pause)
    else:
        enqueue(queue, args.count, args.pause)
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

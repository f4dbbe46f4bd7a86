"""In-process enqueue with N threads sharing one FileQueue: jobs/s and CPU per enqueue (all threads).

    python bench/enqueue_threads.py [--threads 1,8] [--jobs 16000] [--fsync 0] [--dir /dev/shm]

The shortest loop around ``FileQueue.enqueue``, for what ``bench_queue.py``'s enqueue rows do with the
file system's cost left in: with ``--dir /dev/shm`` the CPU per enqueue is what Python costs, and the
difference between 1 and 8 threads is what the threads cost each other (GIL hand-offs at every system
call).  To compare two checkouts, run it from each with ``PYTHONPATH=<checkout>`` alternately.  Prints one
line per thread count; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from bench_queue import REQUEST, in_threads  # the same request and thread harness as bench_queue's rows

import machina
from machina.queue import FileQueue, QueueConfig
from machina.root import init_root

WARM_UP = 200


def run(threads: int, jobs: int, fsync: bool, where: str) -> tuple[float, float]:
    """(enqueues per second, CPU microseconds per enqueue) for ``jobs`` enqueues from ``threads`` threads."""
    root = tempfile.mkdtemp(prefix="enqueue-threads-", dir=where)
    try:
        init_root(root)
        queue = FileQueue(root, QueueConfig(fsync=fsync))
        try:
            for i in range(WARM_UP):
                queue.enqueue(REQUEST, request_id=f"warm-{i}")

            def work(index: int, count: int) -> None:
                for i in range(count):
                    queue.enqueue(REQUEST, request_id=f"t{index}-{i}")

            cpu = time.process_time()
            seconds = in_threads(threads, jobs, work)
            cpu = time.process_time() - cpu
            return jobs / seconds, cpu / jobs * 1e6
        finally:
            queue.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,8", help="thread counts, comma-separated (default 1,8)")
    parser.add_argument("--jobs", type=int, default=16000, help="enqueues per run (default 16000)")
    parser.add_argument("--fsync", type=int, choices=(0, 1), default=0, help="MACHINA_WAL_FSYNC (default 0)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the root goes (default $TMPDIR)")
    args = parser.parse_args()
    print(f"machina from {machina.__file__}; {args.jobs} enqueues, fsync {args.fsync}, in {args.dir}")
    for threads in (int(t) for t in args.threads.split(",")):
        rate, cpu_us = run(threads, args.jobs, bool(args.fsync), args.dir)
        print(f"threads {threads}: {rate:8.0f} enqueues/s, CPU {cpu_us:6.1f} us per enqueue")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

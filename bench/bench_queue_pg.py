"""The PostgreSQL queue beside the file queue and Huey's SqliteStorage, measured in the same run.

Prints figures; asserts nothing.  Run: ``make bench BENCH=queue_pg`` (or ``python bench/bench_queue_pg.py``).
A throw-away PostgreSQL server (machina.testing.pgserver, fsync on, Unix socket) lives in BENCH_QUEUE_DIR
(default bench/out/) beside the file queue's directories, so both write to the same disk.  Counts scale with
BENCH_QUEUE_SCALE.  Skips (exit 0, saying why) where the PostgreSQL server binaries are absent.

Workloads, each with MACHINA_WAL_FSYNC off and on (PostgreSQL: synchronous_commit off / on):
* enqueue: 8 producer threads sharing one queue (as machina-enqueued's thread pool does).
* enqueue+claim+complete: the same producers, plus 2 worker processes x 2 threads (as machina-worker@N).
* scaling (fsync on): enqueue+claim+complete with 1, 2 and 4 worker processes, file queue vs PostgreSQL.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import bench_queue as fsbench  # bench/ is the script's directory: the file queue's and Huey's workloads
from bench_disk import discard

from machina.queue import BaseQueue, FileQueue, QueueConfig
from machina.queue.pg import PgQueue
from machina.root import init_root
from machina.testing.pgserver import PgServer, find_binaries, missing_reason

PRODUCERS = fsbench.PRODUCERS
WORKER_THREADS = fsbench.WORKER_THREADS
REQUEST, RESULT, n = fsbench.REQUEST, fsbench.RESULT, fsbench.n
_databases = itertools.count(1)


class Store:
    """Where one measurement's queue lives: a fresh root (file queue) or a fresh database (PostgreSQL)."""

    def __init__(self, kind: str, server: PgServer | None) -> None:
        self.kind = kind
        if kind == "pg":
            assert server is not None
            self.where = server.create_database(f"bench{next(_databases)}")
        else:
            self.where = fsbench.fresh_dir("cycle")
            init_root(self.where)

    def open(self, fsync: bool, pool_size: int = 4) -> BaseQueue:
        return open_store(self.kind, self.where, fsync, pool_size)


def open_store(kind: str, where: str, fsync: bool, pool_size: int = 4) -> BaseQueue:
    config = QueueConfig(fsync=fsync, url=where if kind == "pg" else None, pool_size=pool_size)
    return PgQueue(where, config) if kind == "pg" else FileQueue(where, config)


def enqueue_rate(store: Store, fsync: bool, total: int) -> float:
    queue = store.open(fsync, pool_size=PRODUCERS)
    try:

        def work(index: int, count: int) -> None:
            for i in range(count):
                queue.enqueue(REQUEST, request_id=f"t{index}-{i}")

        seconds = fsbench.in_threads(PRODUCERS, total, work)
        assert queue.stats().sizes["inbox"] == total
        return total / seconds
    finally:
        queue.close()


def _worker(kind: str, where: str, fsync: bool, worker: int, done: Any, total: int, ready: Any) -> None:
    queue = open_store(kind, where, fsync, pool_size=WORKER_THREADS + 1)
    fsbench.drain_with_threads(queue, worker, done, total, ready)


def cycle_rate(store: Store, fsync: bool, total: int, workers: int) -> float:
    """Jobs/s from the first enqueue until the last is done, with ``workers`` worker processes."""
    ctx = mp.get_context("spawn")
    producer = store.open(fsync, pool_size=PRODUCERS)
    done = ctx.Value("i", 0)
    ready = ctx.Semaphore(0)
    args = (store.kind, store.where, fsync)
    procs = [ctx.Process(target=_worker, args=(*args, w, done, total, ready)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()

    def produce(index: int, count: int) -> None:
        for i in range(count):
            producer.enqueue(REQUEST, request_id=f"c{index}-{i}")

    started = time.perf_counter()
    fsbench.in_threads(PRODUCERS, total, produce)
    for proc in procs:
        proc.join(timeout=600)
    seconds = time.perf_counter() - started
    assert producer.stats().sizes["done"] == total
    producer.close()
    return total / seconds


def main() -> int:
    if find_binaries() is None:
        print(f"skipped: {missing_reason()}")
        return 0
    started = time.monotonic()
    os.makedirs(fsbench.BASE, exist_ok=True)
    where = os.path.realpath(fsbench.BASE)
    print(f"machine: {os.cpu_count()} CPUs; directory {where}: {fsbench.fs_type(where)}")
    print("PostgreSQL: throw-away server in that directory, fsync on, Unix socket; psycopg 3, pool per process")
    print()
    with PgServer(fsync=True, parent=fsbench.BASE) as server:
        print(f"{'workload':46} {'file':>10} {'postgres':>10} {'huey':>10} {'pg/file':>8}")

        def row(label: str, fs: float, pg: float, huey: float | None = None) -> None:
            theirs = f"{huey:8.0f}/s" if huey is not None else f"{'-':>10}"
            print(f"{label:46} {fs:8.0f}/s {pg:8.0f}/s {theirs} {pg / fs:7.2f}x", flush=True)

        for fsync in (False, True):
            tag = "fsync on " if fsync else "fsync off"
            total = n(2000)
            row(
                f"enqueue, {PRODUCERS} threads, {tag}",
                enqueue_rate(Store("fs", None), fsync, total),
                enqueue_rate(Store("pg", server), fsync, total),
                fsbench.huey_enqueue(fsync, total, PRODUCERS),
            )
            cycle = n(1500)
            row(
                f"enqueue+claim+complete, 2x{WORKER_THREADS} workers, {tag}",
                cycle_rate(Store("fs", None), fsync, cycle, 2),
                cycle_rate(Store("pg", server), fsync, cycle, 2),
                fsbench.full_cycle("huey", fsync, cycle),
            )
        print()
        for workers in (1, 2, 4):
            cycle = n(1200)
            label = f"scaling: {workers} worker process(es) x{WORKER_THREADS}, fsync on"
            row(
                label,
                cycle_rate(Store("fs", None), True, cycle, workers),
                cycle_rate(Store("pg", server), True, cycle, workers),
            )
    print()
    print("Each row's figures come from this run, one after another on the same machine; on a shared machine")
    print(f"rerun before comparing across runs.  Run time {time.monotonic() - started:.0f}s.")
    if fsbench._RUN_DIR:
        discard(fsbench._RUN_DIR[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

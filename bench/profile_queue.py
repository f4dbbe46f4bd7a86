"""Where one durable enqueue's time goes, in-process: cProfile of ``FileQueue.enqueue`` (1 thread).

Run: ``python bench/profile_queue.py [--fsync] [--jobs N]``.  Prints the functions with the most time of
their own and the share of the three physical costs (creating the job's file, the WAL's fdatasync, the
rename into inbox/), so a ratio below a target in ``bench_queue`` can be traced to what stops it.  The
queue lives in bench/out/ (git-ignored) and is removed at the end.  For the other processes (machina-
enqueued, machina-worker and its children) under load: ``py-spy record --subprocesses --pid PID``
(``bench_worker.py --profile DIR`` does it for a worker run).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from machina.queue import FileQueue, QueueConfig
from machina.root import init_root

BASE = Path(__file__).resolve().parent / "out"
REQUEST = {"goal_id": "goal.BENCH.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"}}
#: (label, filename suffix, function name) of the physical costs as cProfile names them.
COSTS = (
    ("create the job file (openat O_CREAT)", "~", "<built-in method posix.open>"),
    ("WAL fdatasync (group commit)", "~", "<built-in method posix.fdatasync>"),
    ("rename into inbox/ (renameat2)", "durable.py", "place"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsync", action="store_true", help="MACHINA_WAL_FSYNC=1")
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    BASE.mkdir(exist_ok=True)
    root = tempfile.mkdtemp(prefix="profile-queue-", dir=BASE)
    try:
        init_root(root)
        with FileQueue(root, QueueConfig(fsync=args.fsync)) as queue:
            for _ in range(100):  # warm up: imports, the WAL segment, the directory's first blocks
                queue.enqueue(REQUEST)
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            for _ in range(args.jobs):
                queue.enqueue(REQUEST)
            profile.disable()
            took = time.perf_counter() - started
        stats = pstats.Stats(profile)
        print(f"fsync={'on' if args.fsync else 'off'}: {args.jobs} enqueues, {took / args.jobs * 1e6:.0f} us each")
        own = {(Path(f).name if f != "~" else f, name): row[2] for (f, _l, name), row in stats.stats.items()}  # type: ignore[attr-defined]
        total = sum(own.values())
        for label, file, name in COSTS:
            seconds = sum(t for (f, n), t in own.items() if f == file and n == name)
            print(f"  {label:40} {seconds / args.jobs * 1e6:8.0f} us/job  {seconds / total:6.1%} of the profile")
        stats.sort_stats("tottime").print_stats(12)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where one durable enqueue's time goes, in-process: cProfile of ``FileQueue.enqueue`` (1 thread).

Run: ``python bench/profile_queue.py [--fsync] [--jobs N] [--dir DIR]``.  Prints the functions with the most
time of their own and the share of the three physical costs (creating the job's file, the WAL's fdatasync,
the rename into inbox/), so a ratio below a target in ``bench_queue`` can be traced to what stops it.
``--stages`` prints instead the time of each stage of an enqueue, taken with a pair of clock reads around
each (cProfile's own cost is larger than most of the stages), beside the CPU of the same file-system work
replayed alone (``bench_disk.py``): what is left is the Python of an enqueue.  The queue lives in bench/out/
(git-ignored; ``--dir`` picks another file system) and is removed at the end.  For the other processes (machina-
enqueued, machina-worker and its children) under load: ``py-spy record --subprocesses --pid PID``
(``bench_worker.py --profile DIR`` does it for a worker run).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from machina.queue import FileQueue, QueueConfig, fsenqueue
from machina.root import init_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_disk import replay as disk_replay

BASE = Path(__file__).resolve().parent / "out"
REQUEST = {"goal_id": "goal.BENCH.v1", "inputs": {"input_path": "data/app.log", "pattern": "ERROR"}}
#: (label, filename suffix, function name) of the physical costs as cProfile names them.
COSTS = (
    ("create the job file (openat O_CREAT)", "~", "<built-in method posix.open>"),
    ("WAL fdatasync (group commit)", "~", "<built-in method posix.fdatasync>"),
    ("rename into inbox/ (renameat2)", "durable.py", "place"),
)
#: (label, owner, attribute) of the stages ``--stages`` times, in the order an enqueue reaches them.  The
#: owners are what the enqueue path looks the names up on (``fsenqueue`` imported the two functions).
STAGES: tuple[tuple[str, Any, str], ...] = (
    ("validate the request (as_request)", fsenqueue, "as_request"),
    ("dedup reservation (_reserve)", fsenqueue.EnqueueOps, "_reserve"),
    ("job name (JobNamer.next)", None, "next"),  # the queue's namer: its class is looked up at run time
    ("ENQ record appended (commit_append)", None, "commit_append"),  # the queue's WAL writer, likewise
    ("job file in tmp/ (_write_tmp)", fsenqueue.EnqueueOps, "_write_tmp"),
    ("moved into inbox/ (place)", fsenqueue, "place"),
    ("dedup answer, inbox index (accept)", fsenqueue._Staged, "accept"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsync", action="store_true", help="MACHINA_WAL_FSYNC=1")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--stages", action="store_true", help="time each stage of an enqueue (no cProfile)")
    parser.add_argument("--dir", type=Path, default=BASE, help="where the queue is made (default bench/out/)")
    args = parser.parse_args()
    args.dir.mkdir(exist_ok=True)
    root = tempfile.mkdtemp(prefix="profile-queue-", dir=args.dir)
    try:
        init_root(root)
        if args.stages:
            return stages(root, args.fsync, args.jobs)
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


def stages(root: str, fsync: bool, jobs: int, replay_s: float = 2.0) -> int:
    """Print each stage's wall time per enqueue (1 thread), the enqueue's CPU with and without the timers,
    and the CPU of the same file-system work replayed alone in the same directory."""
    with FileQueue(root, QueueConfig(fsync=fsync)) as queue:
        serial = iter(range(10**9))

        def run(count: int) -> float:
            started = time.process_time()
            for _ in range(count):
                queue.enqueue(REQUEST, request_id=f"s{next(serial)}")
            return (time.process_time() - started) / count * 1e6

        run(200)  # warm up: imports, the WAL segment, the directory's first blocks
        bare = run(jobs)
        spent: Counter[str] = Counter()
        owners = {"next": type(queue._names), "commit_append": type(queue._writer)}
        with _timed_stages(spent, owners):
            timed = run(jobs)
    replayed = disk_replay("enqueue x1" if fsync else "enqueue x1 no fsync", replay_s, str(Path(root).parent))
    fs_us = replayed["cpu_ms"] * 1000
    print(f"fsync={'on' if fsync else 'off'}, {jobs} enqueues, 1 thread, in {Path(root).parent}")
    print(f"  CPU per enqueue {bare:6.1f} us ({timed:.1f} us with the stage timers)")
    for label, _owner, _name in STAGES:
        print(f"    {label:40} {spent[label] / jobs / 1000:6.1f} us wall")
    print(f"  the same file-system work replayed alone: {fs_us:.1f} us CPU (bench_disk.py); the enqueue's own")
    print(f"  Python beyond it: {bare - fs_us:.1f} us (the replay's loop has a little Python of its own)")
    return 0


@contextmanager
def _timed_stages(spent: Counter[str], owners: dict[str, Any]) -> Iterator[None]:
    """Wrap each of :data:`STAGES` with a clock read before and after; put the originals back at the end."""
    originals = []
    for label, owner, name in STAGES:
        target = owner if owner is not None else owners[name]
        original = getattr(target, name)
        originals.append((target, name, original, name in vars(target)))
        setattr(target, name, _timer(original, label, spent))
    try:
        yield
    finally:
        for target, name, original, own in originals:
            if own:
                setattr(target, name, original)
            else:  # inherited: the wrapper shadowed it on this class
                delattr(target, name)


def _timer(func: Callable[..., Any], label: str, spent: Counter[str]) -> Callable[..., Any]:
    clock = time.perf_counter_ns

    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return func(*args, **kwargs)
        finally:
            spent[label] += clock() - started

    return timed


if __name__ == "__main__":
    raise SystemExit(main())

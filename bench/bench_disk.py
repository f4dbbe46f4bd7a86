"""The physical costs under the queue, on the file system the queue uses, and the ceilings they set.

    python bench/bench_disk.py [--dir DIR] [--n N] [--json FILE]

1. Primitives, one thread, p50/p90 (ms): a small append + ``fdatasync`` (the WAL's commit), creating an empty
   file (``openat(O_CREAT|O_EXCL)`` + close: the per-job file), creating a small file with its bytes,
   ``rename`` in one directory, ``rename`` + the directory's ``fsync``, a new small file's ``fsync`` + its
   directory's ``fsync`` (what a run log's close does).
2. Replays of the exact file-system work of one job, with no HTTP, JSON, process hop or Python queue logic
   around it, the fsyncs shared the way :class:`machina.queue.durable.GroupCommit` shares them:

   * ``enqueue``: WAL append, group-committed ``fdatasync``, the job file created in tmp/ and
     ``renameat2``-ed into inbox/, at 1, 8 and 32 threads (and at 1 and 8 without the fdatasync; the 8
     also from 8 processes, :func:`replay_in_processes`, to tell the disk's limit from the GIL's);
   * ``claim+complete``: the claim (rename into processing/, WAL append, read), the result (create in
     tmp/, rename into out/), the DONE record and its group-committed ``fdatasync``, the move into done/,
     at 4 threads (``bench_queue``'s 2 processes x 2 threads), with and without the ``fdatasync``;
   * ``no-op job``: the same plus the job child's run log (create, 4 appends, ``fsync``, ``fsync`` of
     logs/), at 8 threads (``bench_worker``'s 2 workers x 4 slots).

   Each replay gives the rate this disk allows for that work and the CPU it costs (user + kernel of this
   process, per operation): **the ceiling of the matching target** — no implementation of the same durable
   work on this disk can beat it — and the CPU floor under "CPU per job".

3. Creating files where many were just deleted: the CPU of an empty file's creation in a directory, then in
   the same directory a few seconds after ``--deleted`` files there were deleted.  ext4 *without a journal*
   (this machine's root: ``/sys/fs/ext4/<dev>/journal_task`` is ``<none>``) skips, in ``find_inode_bit``,
   every free inode whose deletion time is within the last 60 s (300 s while its inode-table block is
   dirty): ``recently_deleted()`` reads each one's table block.  After a mass deletion every creation in that
   block group scans them (perf: ``recently_deleted`` and ``find_get_block_common`` under ``ext4_create``):
   the slow phases of this disk, which the benchmarks' own clean-ups cause.  A journaled ext4 does not check.

The directory defaults to a fresh temporary directory (the benchmarks' roots live there too); ``--dir`` puts
it elsewhere (a real MACHINA_ROOT's file system).  Everything it creates is removed.  ``--json`` writes the
figures for the other benchmarks (``ceilings()`` computes them in-process for them).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from machina.queue.durable import GroupCommit, create_new, place  # noqa: E402

RECORD = b'{"t":"DONE","ts":1764930000000,"file":"p5000_rq_1764930000000_abcdef0123.json","w":"1"}\n'
JOB = b'{"goal_id":"goal.NOOP.v1"}'
RUN_LOG_LINE = b'{"chain_hash":"' + b"0" * 64 + b'","event":"step","request_id":null,"ts":1764930000.0}\n'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


#: Set (``make bench`` sets it): a directory on the benchmarks' file system where they move what they are done
#: with instead of deleting it, emptied when every benchmark has run.  On ext4 without a journal a mass
#: deletion slows every file creation near it for minutes (section 3 above), so a row that deleted its files
#: would slow the rows after it: the benchmark would measure its own clean-up.  Named like BENCH_DIR, not
#: MACHINA_*: the daemons a benchmark starts inherit it, and warn of every MACHINA_ variable they do not know.
TRASH_ENV = "BENCH_TRASH"


def discard(path: str | Path) -> None:
    """Remove a benchmark's scratch directory, or move it to the trash when :data:`TRASH_ENV` names one."""
    trash = os.environ.get(TRASH_ENV)
    if trash:
        try:
            os.rename(path, os.path.join(trash, f"{secrets.token_hex(6)}-{os.path.basename(path)}"))
            return
        except OSError:
            pass  # on another file system (a tmpfs): deleting there slows nothing later
    shutil.rmtree(path, ignore_errors=True)


def _timed(n: int, setup: Callable[[int], Any], op: Callable[[int, Any], None]) -> list[float]:
    out = []
    for i in range(n):
        arg = setup(i)
        started = time.perf_counter()
        op(i, arg)
        out.append((time.perf_counter() - started) * 1000)
    return out


def primitives(base: Path, n: int) -> dict[str, list[float]]:
    d = base / "prim"
    d.mkdir()
    figures: dict[str, list[float]] = {}
    wal = os.open(d / "wal.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:

        def append_sync(_i: int, _a: Any) -> None:
            os.write(wal, RECORD)
            os.fdatasync(wal)

        figures["append + fdatasync"] = _timed(n, lambda i: None, append_sync)

        def create_empty(i: int, _a: Any) -> None:
            os.close(os.open(d / f"e{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))

        figures["create empty file"] = _timed(n, lambda i: None, create_empty)

        def create_small(i: int, _a: Any) -> None:
            os.close(create_new(str(d / f"s{i}"), JOB))

        figures["create + write small file"] = _timed(n, lambda i: None, create_small)
        figures["rename (same dir)"] = _timed(n, lambda i: None, lambda i, a: os.rename(d / f"s{i}", d / f"r{i}"))

        def rename_fsync(i: int, _a: Any) -> None:
            os.rename(d / f"r{i}", d / f"q{i}")
            os.fsync(dir_fd)

        figures["rename + dir fsync"] = _timed(n, lambda i: None, rename_fsync)

        def new_file_fsync(i: int, _a: Any) -> None:
            fd = create_new(str(d / f"log{i}"), RUN_LOG_LINE * 4)
            os.fsync(fd)
            os.close(fd)
            os.fsync(dir_fd)

        figures["new file + fsync + dir fsync"] = _timed(n, lambda i: None, new_file_fsync)
        figures["unlink"] = _timed(n, lambda i: None, lambda i, a: os.unlink(d / f"e{i}"))
    finally:
        os.close(wal)
        os.close(dir_fd)
        discard(d)
    return figures


class _Replay:
    """A queue-shaped directory tree and a WAL with a group commit, driven by threads."""

    def __init__(self, base: Path, name: str, fsync: bool = True) -> None:
        self.root = base / name
        for sub in ("inbox", "processing", "done", "out", "tmp", "logs"):
            (self.root / sub).mkdir(parents=True)
        self.fsync = fsync
        self.wal = os.open(self.root / "wal.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.wal_lock = threading.Lock()
        self.commit = GroupCommit(lambda: os.fdatasync(self.wal))
        self.logs_fd = os.open(self.root / "logs", os.O_RDONLY | os.O_DIRECTORY)

    def append(self, data: bytes) -> None:
        with self.wal_lock:
            os.write(self.wal, data)

    def tmp(self, data: bytes) -> str:
        path = str(self.root / "tmp" / f"{secrets.token_hex(6)}.tmp")
        os.close(create_new(path, data))
        return path

    def enqueue(self) -> str:
        """What FileQueue.enqueue does to the disk: ENQ record (synced), job file created and placed."""
        name = f"p5000_rq_{time.time_ns() // 1_000_000}_{secrets.token_hex(5)}.json"
        self.append(RECORD + JOB)
        if self.fsync:
            self.commit.sync()
        place(self.tmp(JOB), str(self.root / "inbox" / name))
        return name

    def backlog(self, count: int) -> list[str]:
        """``count`` queued jobs, cheaply: hard links of one file (no inode each), names in claim order."""
        template = self.root / "tmp" / "template"
        template.write_bytes(JOB)
        names = [f"p5000_rq_{1764930000000 + i:013d}_{i:010x}.json" for i in range(count)]
        for name in names:
            os.link(template, self.root / "inbox" / name)
        template.unlink()
        return names[::-1]

    def cycle(self, name: str, run_log: bool) -> None:
        """What claim + complete do to the disk, and with ``run_log`` what the job child's run log adds."""
        r = self.root
        os.rename(r / "inbox" / name, r / "processing" / name)
        self.append(RECORD)
        (r / "processing" / name).read_bytes()
        if run_log:
            log = create_new(str(r / "logs" / f"run_{name}.jsonl"), RUN_LOG_LINE)
            for _ in range(3):
                os.write(log, RUN_LOG_LINE)
            if self.fsync:
                os.fsync(log)
            os.close(log)
            if self.fsync:
                os.fsync(self.logs_fd)
        os.rename(self.tmp(RECORD), r / "out" / f"{name}.attempt1.result.json")
        self.append(RECORD)
        if self.fsync:
            self.commit.sync()
        os.rename(r / "processing" / name, r / "done" / name)

    def close(self) -> None:
        self.commit.close()
        os.close(self.wal)
        os.close(self.logs_fd)


def _drive(threads: int, seconds: float, op: Callable[[int], None]) -> tuple[float, float, int]:
    """(ops/s, CPU ms per op of this process, ops) with ``threads`` threads calling ``op`` for ``seconds``."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(t: int) -> None:
        while time.monotonic() < stop:
            op(t)
            counts[t] += 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    cpu, wall, n = time.process_time() - cpu0, time.monotonic() - wall0, sum(counts)
    return n / wall, cpu / max(n, 1) * 1000, n


#: name -> (kind, threads, fsync): the file-system work of each benchmark's targets.
REPLAYS: dict[str, tuple[str, int, bool]] = {
    "enqueue x1": ("enqueue", 1, True),  # bench_queue 1 thread, bench_enqueued 1 client
    "enqueue x8": ("enqueue", 8, True),  # bench_queue 8 threads
    "enqueue x32": ("enqueue", 32, True),  # bench_enqueued 32 clients
    "enqueue x1 no fsync": ("enqueue", 1, False),
    "enqueue x8 no fsync": ("enqueue", 8, False),  # bench_queue 8 threads, fsync off
    "claim+complete x4": ("cycle", 4, True),  # bench_queue's 2 processes x 2 threads, after the enqueue
    "claim+complete x4 no fsync": ("cycle", 4, False),
    "no-op job x8": ("job", 8, True),  # bench_worker: 2 workers x 4 slots, run log included
}


def replay(name: str, seconds: float = 2.0, directory: str | None = None) -> dict[str, float]:
    """One replay of :data:`REPLAYS`: {"rate": ops/s, "cpu_ms": CPU per op, "n": ops}, measured now."""
    kind, threads, fsync = REPLAYS[name]
    base = Path(tempfile.mkdtemp(prefix="bench-disk-", dir=directory))
    rep = _Replay(base, "r", fsync)
    try:
        if kind == "enqueue":
            rate, cpu, n = _drive(threads, seconds, lambda t: rep.enqueue() and None)
        else:
            names = rep.backlog(int(seconds * 6000))
            lock = threading.Lock()

            def one(_t: int) -> None:
                with lock:
                    if not names:
                        raise SystemExit("replay ran out of queued jobs")
                    name = names.pop()
                rep.cycle(name, run_log=kind == "job")

            rate, cpu, n = _drive(threads, seconds, one)

        def probe(i: int, _a: Any) -> None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            os.close(os.open(rep.root / "tmp" / f"probe{i}", flags, 0o600))

        create_ms = statistics.median(_timed(50, lambda i: None, probe))
    finally:
        rep.close()
        discard(base)
    return {"rate": rate, "cpu_ms": cpu, "n": n, "create_ms": create_ms}


def replay_in_processes(name: str, seconds: float = 2.0, directory: str | None = None) -> dict[str, float]:
    """An ``enqueue`` replay of :data:`REPLAYS` without fsync, its threads made processes (forked, one
    thread each, the same tree and WAL): the same system calls with no GIL between them.  Where this is far
    above the threaded replay, what stops the threaded workload is its threads' GIL hand-offs (each system
    call releases the GIL, and a waiting thread takes it), not the disk."""
    kind, count, fsync = REPLAYS[name]
    if kind != "enqueue" or fsync:  # a group commit shares one fdatasync between threads, not processes
        raise ValueError(f"{name}: only the enqueue replays without fsync run in processes")
    base = Path(tempfile.mkdtemp(prefix="bench-disk-", dir=directory))
    rep = _Replay(base, "r", fsync)
    done, cpu, failed = 0, 0.0, 0
    try:
        start = time.monotonic() + 0.2  # every process starts together, after the forks
        children = []
        for _ in range(count):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child reports through the pipe and exits
                os.close(read_end)
                os._exit(_replay_child(rep, start, seconds, write_end))
            os.close(write_end)
            children.append((pid, read_end))
        for pid, read_end in children:
            with os.fdopen(read_end, "rb") as report:
                figures = report.read().split()
            _, status = os.waitpid(pid, 0)
            if status != 0 or len(figures) != 2:
                failed += 1
                continue
            done, cpu = done + int(figures[0]), cpu + float(figures[1])
    finally:
        rep.close()
        discard(base)
    if failed:  # a rate from fewer processes than named would pass for the disk's
        raise RuntimeError(f"{name}: {failed} of {count} replay processes failed")
    return {"rate": done / seconds, "cpu_ms": cpu / max(done, 1) * 1000, "n": done}


def _replay_child(rep: _Replay, start: float, seconds: float, report_fd: int) -> int:
    try:
        time.sleep(max(0.0, start - time.monotonic()))
        done, cpu0, stop = 0, time.process_time(), start + seconds
        while time.monotonic() < stop:
            rep.enqueue()
            done += 1
        os.write(report_fd, f"{done} {time.process_time() - cpu0}".encode())
        return 0
    except BaseException:
        return 1


def ceilings(directory: str | None = None, n: int = 200, seconds: float = 2.0) -> dict[str, Any]:
    """The figures of this module, measured now."""
    base = Path(tempfile.mkdtemp(prefix="bench-disk-", dir=directory))
    try:
        prim = primitives(base, n)
    finally:
        discard(base)
    return {
        "primitives": {k: {"p50": statistics.median(v), "p90": percentile(v, 90)} for k, v in prim.items()},
        "replays": {name: replay(name, seconds, directory) for name in REPLAYS},
    }


def threads_line(
    name: str, threads: dict[str, float], processes: dict[str, float], measured: float, target: float
) -> str:
    """One line for a threaded target: what the file-system work alone allows from that many threads of one
    process (a :func:`replay`) and from as many processes (:func:`replay_in_processes`); the threads "stop"
    the target when their figure is under it and the processes' is not: the GIL, not the disk."""
    ceiling, free = threads["rate"], processes["rate"]
    if ceiling >= target:
        verdict = "the threads of one process allow the target"
    elif free >= target:
        verdict = "THREADS OF ONE PROCESS ALONE STOP the target (the GIL's hand-offs, not the disk)"
    else:
        verdict = "the DISK ALONE STOPS the target"
    return (f"    threads ceiling ({name}: the same file-system work from threads of one process, nothing else): "
            f"{ceiling:.0f}/s, {threads['cpu_ms']:.3f} ms CPU each; from as many processes {free:.0f}/s "
            f"({processes['cpu_ms']:.3f} ms each); measured {measured:.0f}/s = {measured / ceiling:.2f} x "
            f"ceiling; target {target:.0f}/s = {target / ceiling:.2f} x ceiling: {verdict}")  # fmt: skip


def ceiling_line(name: str, figures: dict[str, float], measured: float, target: float, unit: str = "/s") -> str:
    """One line for a target: what the disk allows for that work (a :func:`replay`), beside the measured
    figure; "stops" when the ceiling itself is under the target."""
    ceiling = figures["rate"]
    verdict = "the disk allows the target" if ceiling >= target else "the DISK ALONE STOPS the target"
    return (f"    disk ceiling ({name}: the same file-system work, nothing else): {ceiling:.0f}{unit}, "
            f"{figures['cpu_ms']:.3f} ms CPU each (a new file {figures['create_ms']:.3f} ms); measured "
            f"{measured:.0f}{unit} = {measured / ceiling:.2f} x "
            f"ceiling; target {target:.0f}{unit} = {target / ceiling:.2f} x ceiling: {verdict}")  # fmt: skip


#: Files deleted before the probe of section 3 (``--deleted``; run_all's probe too).
REUSE_DELETED = 10_000


def reuse_after_deletes(directory: str | None, deleted: int = REUSE_DELETED, probe: int = 1000) -> dict[str, float]:
    """CPU microseconds per empty-file creation in a fresh directory, then in the same directory 2 s after
    ``deleted`` files there were deleted (a deletion time in the current second does not count as recent)."""
    base = Path(tempfile.mkdtemp(prefix="bench-disk-reuse-", dir=directory))

    def create(prefix: str, count: int) -> float:
        started = time.process_time()
        for i in range(count):
            os.close(os.open(base / f"{prefix}{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        return (time.process_time() - started) / count * 1e6

    try:
        before = create("a", probe)
        create("b", deleted - probe)
        for name in os.listdir(base):
            os.unlink(base / name)
        time.sleep(2.0)
        after = create("c", probe)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"before_us": before, "after_us": after, "deleted": deleted}


def journal_of(path: str) -> str:
    """ "journal", "no journal" (ext4's sysfs says so) or "unknown", for the file system holding ``path``."""
    device = os.stat(path).st_dev
    name = f"{os.major(device)}:{os.minor(device)}"
    for entry in os.listdir("/sys/fs/ext4") if os.path.isdir("/sys/fs/ext4") else []:
        try:  # /sys/class/block names partitions (vda1) as well as whole disks
            if Path(f"/sys/class/block/{entry}/dev").read_text().strip() != name:
                continue
            task = Path(f"/sys/fs/ext4/{entry}/journal_task").read_text().strip()
        except OSError:
            continue
        return "no journal" if task == "<none>" else "journal"
    return "unknown"


def report_reuse(reuse: dict[str, float], where: str) -> None:
    print(f"\ncreating a file where {reuse['deleted']:.0f} were deleted 2 s before ({journal_of(where)}): "
          f"{reuse['after_us']:.0f} us of CPU each, against {reuse['before_us']:.0f} us in that directory before "
          f"the deletions ({reuse['after_us'] / reuse['before_us']:.1f} x); on ext4 without a journal the inode "
          "allocator skips inodes freed in the last 60-300 s, so a mass deletion (a benchmark's clean-up, a "
          "retention sweep) slows every file creation near it for minutes")  # fmt: skip


def report(figures: dict[str, Any]) -> None:
    prim = figures["primitives"]
    print(f"{'primitive (one thread)':<32} {'p50 ms':>8} {'p90 ms':>8}")
    for name, f in prim.items():
        print(f"{name:<32} {f['p50']:>8.3f} {f['p90']:>8.3f}")
    sync = prim["append + fdatasync"]["p50"]
    create = prim["create + write small file"]["p50"]
    rename = prim["rename (same dir)"]["p50"]
    serial = sync + create + rename
    print(f"\none client's durable enqueue, serially: fdatasync {sync:.3f} + create {create:.3f} + rename "
          f"{rename:.3f} = {serial:.3f} ms -> at most {1000 / serial:.0f} req/s before HTTP or Python; "
          f"1,800 req/s needs all three within 0.556 ms (fdatasync alone <= {0.556 - create - rename:.3f} ms "
          f"with these create and rename costs)")  # fmt: skip
    print(f"\n{'replay (file-system work only)':<32} {'ops/s':>8} {'CPU ms/op':>10} {'ops':>7} {'create ms':>10}")
    for name, f in figures["replays"].items():
        print(f"{name:<32} {f['rate']:>8.0f} {f['cpu_ms']:>10.3f} {f['n']:>7} {f['create_ms']:>10.3f}")
    job = figures["replays"]["no-op job x8"]
    enq = figures["replays"]["enqueue x32"]
    print(f"\nCPU floor of one no-op job's file-system work (worker + child side): {job['cpu_ms']:.3f} ms; with its "
          f"enqueue {job['cpu_ms'] + enq['cpu_ms']:.3f} ms (target: 1.5 ms for all processes together)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to measure (default: the temporary directory)")
    parser.add_argument("--n", type=int, default=300, help="samples per primitive (default 300)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per replay (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--deleted", type=int, default=REUSE_DELETED, help=f"files deleted before the reuse probe ({REUSE_DELETED})"
    )
    args = parser.parse_args()
    where = args.dir or tempfile.gettempdir()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; file system of {where}")
    figures = ceilings(args.dir, args.n, args.seconds)
    report(figures)
    if not os.environ.get(TRASH_ENV):  # under make bench, run_all probes it last (its deletions slow the rest)
        figures["reuse"] = reuse_after_deletes(args.dir, args.deleted)
        report_reuse(figures["reuse"], where)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

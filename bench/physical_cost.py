"""How much of a benchmark's shortfall is the disk: the same benchmark with its scratch root on the disk and on
a tmpfs, alternated in one invocation, the target lines of each run side by side.

    python bench/physical_cost.py [--pairs N] [--tmpfs DIR] SCRIPT [ARGS...]
    python bench/physical_cost.py bench/bench_worker.py --repeat 1 --jobs 6000 --goal noop

Same code, same settings (fsync on stays on), same machine: on a tmpfs a new file costs no inode-table scan
and ``fsync`` returns at once, so what a run gains there is what this disk's file creation, fsync and rename
cost it.  That is the "physical cost" of issue 16's "Done when".  The benchmarks pick their scratch
directory from ``TMPDIR`` (and ``BENCH_QUEUE_DIR`` / ``BENCH_DIR`` for the two that keep their own); this
runner sets those to a fresh directory under the tmpfs (default ``/dev/shm``) for the tmpfs runs and leaves
them at their defaults for the disk runs, alternating disk, tmpfs, disk, ... so that the shared machine's
drift falls on both.  It prints every line of each run that names a target, a ceiling or a result table
row, and the file system each run used.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
#: Lines worth comparing: targets and their verdicts, and the rows of the tables that hold the figures.
KEEP = ("target", "ceiling", "x ", "req/s", "jobs/s", "noop", "error_scan", "enqueue", "restart", "clients")


def fs_type(path: str) -> str:
    """The file-system type mounted at or above ``path`` (from /proc/self/mounts)."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


def run_once(argv: list[str], scratch: str | None) -> str:
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    if scratch is None:
        default = tempfile.gettempdir()
        where = f"the benchmark's default ($TMPDIR {default}: {fs_type(default)}; bench/out: {fs_type(str(CHECKOUT))})"
    else:
        env.update(TMPDIR=scratch, BENCH_QUEUE_DIR=scratch, BENCH_DIR=scratch)
        where = f"{scratch}: {fs_type(scratch)}"
    print(f"\n--- {' '.join(argv)}  [scratch {where}]", flush=True)
    done = subprocess.run([sys.executable, *argv], env=env, cwd=CHECKOUT, capture_output=True, text=True)
    if done.returncode:
        print(f"    exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1, help="disk/tmpfs pairs to run (default 1)")
    parser.add_argument("--tmpfs", default="/dev/shm", help="a directory on a tmpfs (default /dev/shm)")
    parser.add_argument("--all", action="store_true", help="print every line, not only targets and tables")
    parser.add_argument("script", help="a benchmark script, e.g. bench/bench_worker.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    if fs_type(args.tmpfs) != "tmpfs":
        print(f"{args.tmpfs} is not on a tmpfs ({fs_type(args.tmpfs)}): pick one with --tmpfs", file=sys.stderr)
        return 2
    argv = [args.script, *args.args]
    for _ in range(args.pairs):
        for on_tmpfs in (False, True):
            scratch = tempfile.mkdtemp(prefix="physical-cost-", dir=args.tmpfs) if on_tmpfs else None
            try:
                out = run_once(argv, scratch)
            finally:
                if scratch:
                    shutil.rmtree(scratch, ignore_errors=True)
            for line in out.splitlines():
                if args.all or any(word in line for word in KEEP):
                    print("    " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

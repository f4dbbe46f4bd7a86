"""How much of a benchmark's shortfall is the file system: the same benchmark with its scratch root on the
disk and on other file systems, alternated in one invocation, the target lines of each run side by side.

    python bench/physical_cost.py [--pairs N] [--on DIR]... SCRIPT [ARGS...]
    python bench/physical_cost.py bench/bench_worker.py --repeat 1 --jobs 6000 --goal noop
    python bench/physical_cost.py --on /mnt/ext4j --on /dev/shm bench/bench_queue.py

Same code, same settings (fsync on stays on), same machine, same CPUs: only where the files go changes.  On a
tmpfs a new file costs no inode-table scan and ``fsync`` returns at once, so what a run gains there is what
the disk's file creation, fsync and rename cost it: the "physical cost" of issue 16's "Done when".  An ext4
image with a journal, loop-mounted from the same disk, separates the disk from this root file system's
lack of a journal (without one, ext4 skips every recently deleted inode when it allocates one: see
docs/SPEED.md).  Make one with::

    truncate -s 2G /var/tmp/ext4j.img && mkfs.ext4 -q -F /var/tmp/ext4j.img
    mkdir -p /mnt/ext4j && mount -o loop /var/tmp/ext4j.img /mnt/ext4j && chmod 1777 /mnt/ext4j

The benchmarks pick their scratch directory from ``TMPDIR`` (and ``BENCH_QUEUE_DIR`` / ``BENCH_DIR`` for
the ones that keep their own); this runner points those at a fresh directory under each ``--on`` directory
(default: ``/dev/shm`` only) and leaves them at their defaults for the disk run, in the order disk, each
``--on``, disk, ... so that the shared machine's drift falls on all of them.  It prints every line of each
run that names a target, a ceiling or a result-table row, with the file system each run used.  Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
#: Lines worth comparing: targets and their verdicts, and the rows of the tables that hold the figures.
KEEP = ("target", "ceiling", "x ", "req/s", "jobs/s", "noop", "error_scan", "enqueue", "restart", "clients")


def mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, source, file-system type) of the mount holding ``path`` (from /proc/self/mounts)."""
    best = ("", "?", "?")
    real = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            source, mount, kind = line.split()[:3]
            mount = mount.replace("\\040", " ")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
                best = (mount, source, kind)
    return best


def describe(path: str) -> str:
    """``/dev/shm: tmpfs`` or ``/: ext4 on /dev/vda, no journal``: what a run's scratch directory sits on."""
    _mount, source, kind = mount_of(path)
    text = f"{path}: {kind}"
    if kind == "ext4":
        # jbd2 lists one directory per journaled device, named after the device ("vda-8", "loop0-8").
        journaled = bool(glob.glob(f"/proc/fs/jbd2/{os.path.basename(source)}-*"))
        text += f" on {source}, {'with a journal' if journaled else 'no journal'}"
    return text


def run_once(argv: list[str], scratch: str | None) -> str:
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT))
    if scratch is None:
        default = tempfile.gettempdir()
        where = f"the benchmark's default ($TMPDIR {describe(default)}; bench/out {describe(str(CHECKOUT))})"
    else:
        env.update(TMPDIR=scratch, BENCH_QUEUE_DIR=scratch, BENCH_DIR=scratch)
        where = describe(scratch)
    print(f"\n--- {' '.join(argv)}  [scratch {where}]", flush=True)
    done = subprocess.run([sys.executable, *argv], env=env, cwd=CHECKOUT, capture_output=True, text=True)
    if done.returncode:
        print(f"    exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1, help="rounds of (disk, each --on) to run (default 1)")
    parser.add_argument("--on", action="append", metavar="DIR",
                        help="a writable directory on another file system; repeatable (default /dev/shm)")  # fmt: skip
    parser.add_argument("--all", action="store_true", help="print every line, not only targets and tables")
    parser.add_argument("script", help="a benchmark script, e.g. bench/bench_worker.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args()
    others = args.on or ["/dev/shm"]
    for other in others:
        if not (os.path.isdir(other) and os.access(other, os.W_OK)):
            print(f"--on {other}: not a writable directory", file=sys.stderr)
            return 2
    argv = [args.script, *args.args]
    for _ in range(args.pairs):
        for other in [None, *others]:
            scratch = tempfile.mkdtemp(prefix="physical-cost-", dir=other) if other else None
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

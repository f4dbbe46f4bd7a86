"""A/B of two checkouts on the worker path: jobs/s and CPU per job, runs alternated, paired ratios.

    python bench/ab_worker.py --a CHECKOUT_A --b CHECKOUT_B [--goal noop] [--jobs 600] [--pairs 5] [--fsync 1]

Each run is ``bench_worker.throughput`` (2 workers, the real daemons, a fresh root) imported from *that*
checkout, in a process of its own started in that checkout (so its ``machina`` is the one measured; a
checkout without a ``.venv`` of its own needs ``.venv/bin/python3`` linked to an interpreter that has the
dependencies).  A and B alternate (A B A B ...), and the ratio B/A is taken pair by pair, so a comparison
holds while the shared machine's speed drifts.  Prints each pair and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# The run's root goes to the trash, not deleted: on this disk (ext4 without a journal) a mass deletion slows
# every file creation near it for minutes (docs/SPEED.md, seventh round), so the next run would pay for it.
RUN = """
import json, os, sys, tempfile
from pathlib import Path
sys.path.insert(0, "bench")
import bench_worker as b
tmp = tempfile.mkdtemp(prefix="ab-worker-", dir=sys.argv[4])
r = b.throughput(Path(tmp), sys.argv[1], 2, sys.argv[3] == "1", int(sys.argv[2]))
os.rename(tmp, os.path.join(sys.argv[5], os.path.basename(tmp)))
print(json.dumps({"rate": r.rate, "cpu_ms": r.cpu_ms}))
"""


def one(checkout: Path, goal: str, jobs: int, fsync: int, scratch: str, trash: str) -> dict[str, object]:
    py = checkout / ".venv" / "bin" / "python3"
    env = dict(os.environ, PYTHONPATH=str(checkout))
    argv = [str(py), "-c", RUN, goal, str(jobs), str(fsync), scratch, trash]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise SystemExit(f"the run in {checkout} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True)
    parser.add_argument("--b", type=Path, required=True)
    parser.add_argument("--goal", default="noop")
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--fsync", type=int, choices=(0, 1), default=1)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; A = {args.a}, B = {args.b}; goal "
          f"{args.goal}, {args.jobs} jobs, 2 workers, fsync {'on' if args.fsync else 'off'}")  # fmt: skip
    print(f"{'pair':>4} {'A jobs/s':>9} {'B jobs/s':>9} {'B/A':>6}  {'A CPU ms/job (w+c+t)':>24} "
          f"{'B CPU ms/job (w+c+t)':>24} {'B/A':>6}")  # fmt: skip
    rates, cpus = [], []
    scratch = tempfile.mkdtemp(prefix="ab-worker-")
    trash = os.path.join(scratch, "trash")  # emptied once, after the last pair
    os.mkdir(trash)
    try:
        for i in range(args.pairs):
            pair(i, args, scratch, trash, rates, cpus)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"median B/A: jobs/s {statistics.median(rates):.2f}, CPU per job {statistics.median(cpus):.2f} "
          f"(min {min(cpus):.2f}, max {max(cpus):.2f})")  # fmt: skip
    return 0


def pair(i: int, args: argparse.Namespace, scratch: str, trash: str, rates: list[float], cpus: list[float]) -> None:
    """One A run and one B run, one after the other; their ratios B/A appended and printed."""
    a = one(args.a, args.goal, args.jobs, args.fsync, scratch, trash)
    b = one(args.b, args.goal, args.jobs, args.fsync, scratch, trash)
    ca, cb = a["cpu_ms"], b["cpu_ms"]
    ta, tb = sum(ca.values()), sum(cb.values())  # type: ignore[union-attr]
    rates.append(b["rate"] / a["rate"])  # type: ignore[operator]
    cpus.append(tb / ta)

    def split(c: dict[str, float], total: float) -> str:
        return f"{total:.2f} ({c['worker']:.2f}+{c['children']:.2f}+{c['toolhost']:.2f})"

    print(
        f"{i + 1:>4} {a['rate']:>9.0f} {b['rate']:>9.0f} {rates[-1]:>6.2f}  {split(ca, ta):>24} "  # type: ignore[arg-type]
        f"{split(cb, tb):>24} {cpus[-1]:>6.2f}",
        flush=True,
    )  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())

"""A/B of two checkouts on ``POST /enqueue``: req/s and latency of machina-enqueued, runs alternated, paired ratios.

    python bench/ab_enqueued.py --a CHECKOUT_A --b CHECKOUT_B [--clients 32] [--pairs 3] [--seconds 4]
                                [--fsync 1] [--dir /dev/shm]

Each run starts the daemon of *that* checkout (``bin/machina-enqueued``, its own ``.venv``: ``make venv``
there) on a fresh root under ``--dir`` (default: ``$TMPDIR``) and drives it with wrk (keep-alive, token
auth) for ``--seconds`` after a one-second warm-up, using that checkout's ``bench/bench_enqueued.py``.  A
and B alternate (A B A B ...) and the ratio B/A is taken pair by pair, so a comparison holds while the
shared machine's speed drifts.  Prints each pair and the median ratio.
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
import bench_enqueued as b
import machina
clients, seconds, fsync = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
where, trash = sys.argv[4], sys.argv[5]
work = Path(tempfile.mkdtemp(prefix="ab-enqueued-", dir=where))
try:
    daemon = b.Daemon(work, fsync)
    try:
        post = b.lua_script(work, "post", "POST", True)
        b.wrk(daemon.url("/enqueue"), post, clients, 1)
        r = b.wrk(daemon.url("/enqueue"), post, clients, seconds)
    finally:
        daemon.stop()
finally:
    os.rename(work, os.path.join(trash, work.name))
print(json.dumps({"rps": r["rps"], "errors": r["errors"], "p50_ms": r["p50_us"] / 1000,
                  "p99_ms": r["p99_us"] / 1000, "machina": machina.__file__}))
"""


def one(checkout: Path, clients: int, seconds: float, fsync: int, where: str, trash: str) -> dict[str, object]:
    py = checkout / ".venv" / "bin" / "python3"
    argv = [str(py), "-c", RUN, str(clients), str(seconds), str(fsync), where, trash]
    done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode:
        raise SystemExit(f"the run in {checkout} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    if not str(result["machina"]).startswith(str(checkout.resolve())):
        raise SystemExit(f"{checkout} ran the machina of {result['machina']}: give it a .venv of its own")
    return result


def show(result: dict[str, object]) -> str:
    return (f"{result['rps']:7.0f} req/s (errors {result['errors']}, p50 {result['p50_ms']:.2f} ms, "
            f"p99 {result['p99_ms']:.2f} ms)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--b", type=Path, required=True, help="the checkout measured against it")
    parser.add_argument("--clients", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds measured per run (default 4)")
    parser.add_argument("--fsync", type=int, choices=(0, 1), default=1, help="MACHINA_WAL_FSYNC (default 1)")
    parser.add_argument("--dir", default="", help="where the roots go (default $TMPDIR); e.g. /dev/shm")
    args = parser.parse_args()
    where = f" under {args.dir}" if args.dir else ""
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {args.clients} clients, fsync {args.fsync}{where}")
    ratios = []
    scratch = tempfile.mkdtemp(prefix="ab-enqueued-", dir=args.dir or None)
    trash = os.path.join(scratch, "trash")  # emptied once, after the last pair
    os.mkdir(trash)
    try:
        for pair in range(args.pairs):
            a = one(args.a, args.clients, args.seconds, args.fsync, scratch, trash)
            b = one(args.b, args.clients, args.seconds, args.fsync, scratch, trash)
            ratios.append(float(b["rps"]) / float(a["rps"]))  # type: ignore[arg-type]
            print(f"pair {pair + 1}: A {show(a)}   B {show(b)}   B/A x{ratios[-1]:.2f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"B/A req/s: median x{statistics.median(ratios):.2f} (min x{min(ratios):.2f}, max x{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

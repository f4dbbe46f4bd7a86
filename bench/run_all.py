"""Run every benchmark (bench/bench_*.py) in turn and print their figures.

Each benchmark is a standalone script that prints its own table and ratios against a baseline measured in
the same run; this runner only sequences them.  ``make bench BENCH=queue`` runs the ones whose name
contains "queue".  Benchmarks target loopback only and clean up what they start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = os.environ.get("BENCH", "")
    scripts = sorted(p for p in HERE.glob("bench_*.py") if only in p.stem)
    if not scripts:
        print(f"no benchmarks match {only!r}", file=sys.stderr)
        return 1
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    failed = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)], env=env, cwd=HERE.parent)
        print(f"--- {script.stem}: exit {rc}, {time.monotonic() - started:.1f}s", flush=True)
        if rc:
            failed.append(script.stem)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark (bench/bench_*.py) in turn and print their figures, then every verdict in one place.

Each benchmark is a standalone script that prints its own table and ratios against a baseline measured in
the same run; this runner only sequences them, passes their output through as it comes, and at the end
repeats each target's verdict line ("met" / "NOT met") and each disk-ceiling line ("the disk allows the
target" / "the DISK ALONE STOPS the target") under the name of the benchmark that printed it, so that one
screen shows where every target of the issues stands in this run.  ``make bench BENCH=queue`` runs the ones
whose name contains "queue".  Benchmarks target loopback only and clean up what they start.

The first line names the interpreter: every process a benchmark starts (daemons, job children, tool
executors) runs on the checkout's ``.venv``, and its build moves every figure.  On the 2-core machine of
docs/SPEED.md, Debian's ``/usr/bin/python3`` ran a no-op job on 0.84 x the CPU of a default pyenv build
(no ``--enable-optimizations``, its core in libpython.so); ``make clean && make setup PYTHON=/usr/bin/python3``
makes the ``.venv`` from Debian's, as a fresh Debian machine's ``make setup`` does.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_disk  # noqa: E402  (a sibling script, not a package)

#: A target's verdict ("... met", "... NOT met", "...: met (...)"), or a disk or threads ceiling's.
VERDICT = re.compile(
    r"\b(?:NOT )?met\b|the disk allows the target|the DISK ALONE STOPS the target"
    r"|the threads of one process allow the target|THREADS OF ONE PROCESS ALONE STOP the target"
)


def main() -> int:
    only = os.environ.get("BENCH", "")
    scripts = sorted(p for p in HERE.glob("bench_*.py") if only in p.stem)
    if not scripts:
        print(f"no benchmarks match {only!r}", file=sys.stderr)
        return 1
    print(interpreter(), flush=True)
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["PYTHONUNBUFFERED"] = "1"  # their lines come through as they print them
    (HERE / "out").mkdir(exist_ok=True)
    trash = tempfile.mkdtemp(prefix="trash-", dir=HERE / "out")  # emptied once, after the last benchmark
    env[bench_disk.TRASH_ENV] = trash
    failed: list[str] = []
    verdicts: list[tuple[str, str]] = []
    try:
        for script in scripts:
            print(f"\n=== {script.stem} ===", flush=True)
            started = time.monotonic()
            rc = run(script, env, verdicts)
            print(f"--- {script.stem}: exit {rc}, {time.monotonic() - started:.1f}s", flush=True)
            if rc:
                failed.append(script.stem)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    if "bench_disk" in (script.stem for script in scripts):  # last: its deletions would slow what follows
        reuse = bench_disk.reuse_after_deletes(str(HERE / "out"))
        bench_disk.report_reuse(reuse, str(HERE / "out"))
    print(summary(verdicts))
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def interpreter() -> str:
    """Which Python runs the benchmarks, and whether its core is a shared library (a build detail that
    moves every figure; Debian's python3 links it in, a default pyenv build loads libpython.so)."""
    with open("/proc/self/maps") as maps:
        shared = sorted({line.split()[-1] for line in maps if "/libpython" in line})
    core = f"its core from {shared[0]}" if shared else "its core linked into the executable"
    return (f"interpreter: {sys.executable} -> {os.path.realpath(sys.executable)}, Python "
            f"{platform.python_version()}, {core}")  # fmt: skip


def run(script: Path, env: dict[str, str], verdicts: list[tuple[str, str]]) -> int:
    """Run one benchmark, echoing its output; its verdict lines are added to ``verdicts``."""
    with subprocess.Popen(
        [sys.executable, str(script)], env=env, cwd=HERE.parent, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if VERDICT.search(line):
                verdicts.append((script.stem, line.strip()))
        return proc.wait()


def summary(verdicts: list[tuple[str, str]]) -> str:
    """Every verdict line again, by benchmark; then how many targets were met, and how many of those not
    met had a ceiling (printed right after the target's line: the disk's, or one process's threads') that
    is itself under the target."""
    met = missed = stopped = 0
    last_missed = False
    for _, text in verdicts:
        if "disk ceiling" in text or "threads ceiling" in text:
            stopped += last_missed and "ALONE STOP" in text  # the disk's "ALONE STOPS", the threads' "ALONE STOP"
            last_missed = False  # one ceiling per target
            continue
        last_missed = bool(re.search(r"\bNOT met\b", text))
        met += not last_missed
        missed += last_missed
    lines = ["", "=== every target in this run (the lines above, again) ==="]
    lines += [f"{name:<14} {text}" for name, text in verdicts]
    lines.append(
        f"{met} of {met + missed} targets met; of the {missed} not met, {stopped} had a ceiling under the target "
        "(the same file-system work replayed alone, right after the row: on this disk, or from threads of one "
        "process)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

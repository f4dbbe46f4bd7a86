"""Restart soak (issue 19): start and stop every daemon many times and show that nothing accumulates.

For each of machina-toolhost, machina-embed, machina-enqueued, machina-worker (with a toolhost beside it)
and ``machina up`` as a whole: N rounds, even ones stopped by SIGTERM, odd ones by SIGKILL followed by a
fresh start (which must get past the killed one's socket, pid files and lock), then a closing start and
SIGTERM.  Prints the disk usage of the root's run/, of the daemons' $TMPDIR and of the machine's /tmp
before and after, and the open fds of a long-running toolhost, embed and enqueued after the first 100 and
after all requests.  Loopback only; signals go only to pids started here (machina.testing.soak).

    python bench/bench_restart_soak.py                # 200 rounds each, 10,000 requests
    python bench/bench_restart_soak.py --cycles 20 --requests 2000

/tmp is shared with everyone else on the machine, so its figures move with their work; what this soak
could have left there is counted by name (entries ending in the pid of a process it started).
Exit status 1 when a round failed, a process outlived its parent, or run/ or $TMPDIR is not as it was.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from machina.owned import OwnedDir, temp_root
from machina.testing.soak import DAEMONS, Soak, usage

SHARED_TMP = "/tmp"  # measured (other people's files come and go there too), never written


def named_after(place: str, pids: set[int], existing: set[str]) -> list[str]:
    """Entries of ``place`` whose name ends in ``.<pid>`` of a process this soak started, leaving out the
    ``existing`` ones (listed before the soak began: a pid is reused, and an older file can carry it)."""
    names = listing(place) - existing
    return sorted(name for name in names if name.rpartition(".")[2].isdigit() and int(name.rpartition(".")[2]) in pids)


def listing(place: str) -> set[str]:
    try:
        return set(os.listdir(place))
    except OSError:
        return set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=int(os.environ.get("SOAK_CYCLES", "200")))
    parser.add_argument("--requests", type=int, default=int(os.environ.get("SOAK_REQUESTS", "10000")))
    parser.add_argument("--daemons", default=",".join(DAEMONS), help="comma-separated subset of " + ",".join(DAEMONS))
    args = parser.parse_args()
    owner = OwnedDir(temp_root(), "machina-soak")
    workdir = owner.create()
    soak = Soak(workdir)
    bad: list[str] = []
    try:
        before = {"run/": usage(soak.run_dir), "$TMPDIR": usage(soak.tmpdir), SHARED_TMP: usage(SHARED_TMP)}
        existing = listing(SHARED_TMP)
        print(f"root {soak.root}; {args.cycles} rounds per daemon (half SIGTERM, half SIGKILL + fresh start)")
        for daemon in args.daemons.split(","):
            report = soak.cycle(daemon, args.cycles, progress=lambda line: print("  ..", line, flush=True))
            print(
                f"{daemon:9} {report.cycles:4} rounds in {report.seconds:7.1f}s: {report.term_clean:4} clean SIGTERM "
                f"stops, {report.killed:4} SIGKILLs, {report.ready_after_kill:4} ready starts after a SIGKILL, "
                f"{len(report.failures)} failures",
                flush=True,
            )
            bad += [f"{daemon}: {failure}" for failure in report.failures]
        after = {"run/": usage(soak.run_dir), "$TMPDIR": usage(soak.tmpdir), SHARED_TMP: usage(SHARED_TMP)}
        for place in before:
            print(f"disk {place:8} before: {before[place]!s:28} after: {after[place]}")
        ours = named_after(SHARED_TMP, soak.started, existing)
        print(f"entries in {SHARED_TMP} named after a pid this soak started: {len(ours)} {ours[:5]}")
        if os.listdir(soak.run_dir) or os.listdir(soak.tmpdir) or ours:
            bad.append(f"left behind: run/ {os.listdir(soak.run_dir)}, $TMPDIR {os.listdir(soak.tmpdir)}")
        first = min(100, args.requests)
        checkpoints = sorted({first, *(args.requests * k // 5 for k in range(1, 6))} - {0})
        for daemon in ("toolhost", "embed", "enqueued"):
            started = time.monotonic()
            samples = soak.fd_samples(daemon, checkpoints)
            shown = ", ".join(f"{count}: {fds}" for count, fds in samples)
            print(f"open fds of {daemon:9} after N requests ({shown})  {time.monotonic() - started:.1f}s", flush=True)
            (_, after_first), (_, after_all) = samples[0], samples[-1]
            if after_all > after_first + 3:
                bad.append(f"{daemon}: {after_all - after_first} more open fds after {args.requests} requests")
        survivors = soak.leftover_processes()
        if survivors:
            bad.append(f"processes still running: {survivors}")
    finally:
        soak.close()
        if bad:
            print(f"kept for inspection (logs/ has each daemon's log): {workdir}", file=sys.stderr)
        else:
            owner.close()
    for line in bad:
        print("FAILED:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

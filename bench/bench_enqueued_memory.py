"""Memory of machina-enqueued over 200,000 POST /enqueue requests (issue 16: "memory stays flat").

    python bench/bench_enqueued_memory.py [--requests N] [--every N] [--clients N] [--fsync]
                                          [--worker-jobs N]

One ``bin/machina-enqueued`` on loopback (token auth, keep-alive), driven by ``wrk`` in rounds of ``--every``
requests (default 10,000) up to ``--requests`` (default 200,000); after each round the daemon's RSS
(``VmRSS``) is read ten times over two seconds and the least reading kept: a checkpoint holds 8-10 MiB more
for one to one and a half seconds (a 4 MiB segment read, the stems it looks for), and one reading taken
inside that window said GROWS on its own (series read every 50 ms, 2026-12-07).  What a leak holds stays
in every reading; the largest reading of the run, checkpoints included, is printed beside the verdict.
fsync is off by default (more requests per minute; the memory path is the same).
Verdict: **flat** when the largest RSS of the second half of the rounds after the warm-up (the first five
rounds, 50k requests: the executor's threads and their malloc arenas reach their working set, and the first
4 MiB WAL segment rotates and is settled by a checkpoint) is within 10 % of the largest of the first half.
The RSS is a saw-tooth (each checkpoint that settles a segment raises it for a while: 45.7 -> 53.7 ->
49.6 -> 52.6 MiB), so one sample against another says more about where each fell on a tooth than about
a leak; a leak raises the later peaks.  The last sample against the warm-up's, the largest sample, and the
growth after two rounds are printed beside it.

``--worker-jobs N`` (default 0: skipped) does the same for one ``machina-worker`` (and its toolhost): N no-op
jobs queued in rounds, the worker's RSS and its job children's read after each round is drained.

Bounded (each round has a time limit; the whole run stops at ``--max-seconds``), on a temporary root
removed at the end; every process it starts is stopped by its pid.  Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from bench_disk import discard  # noqa: E402

from machina.proctree import child_pids  # noqa: E402
from machina.root import init_root  # noqa: E402

TOKEN = "bench-token-" + "0123456789abcdef"
JOB = '{"goal_id":"goal.NOOP.v1"}'
GROWTH_LIMIT = 0.10
#: Rounds before the reference sample: the 32-thread executor and its malloc arenas reach their working set,
#: and the first WAL segment (4 MiB, about 33k requests) rotates and is settled by a checkpoint.
WARMUP_ROUNDS = 5

LUA = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
local count = 0
response = function(status, headers, body)
  count = count + 1
  if count >= {stop} then wrk.thread:stop() end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"requests":%d,"duration_us":%d,"errors":%d}}\\n', summary.requests,
    summary.duration, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


def env_for(root: Path, fsync: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MACHINA_", "NOTIFY_", "WATCHDOG_"))}
    env.update(MACHINA_ENV_FILE="/dev/null", MACHINA_ROOT=str(root), MACHINA_API_TOKEN=TOKEN,
               MACHINA_WAL_FSYNC="1" if fsync else "0", MACHINA_LOG_LEVEL="warning",
               MACHINA_DEDUP_TTL_MS="0")  # fmt: skip
    return env


#: readings per round and the time between them: two seconds, longer than a checkpoint's extra memory lasts
READINGS, READING_GAP_S = 10, 0.2


def settled_rss_mib(pid: int) -> tuple[float, float]:
    """(least, largest) of READINGS readings of ``pid``'s RSS over two seconds, in MiB."""
    readings = []
    for i in range(READINGS):
        if i:
            time.sleep(READING_GAP_S)
        readings.append(rss_kib(pid) / 1024)
    return min(readings), max(readings)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is its own
            proc.wait()


def verdict(samples: list[float], warmup: int = WARMUP_ROUNDS) -> tuple[str, float, float, float]:
    """('flat' | 'GROWS', the growth of the later half's peak over the earlier half's, of the last sample
    over the warm-up one, of the largest sample over the warm-up one) as fractions: flat when the peaks'
    growth is under GROWTH_LIMIT (the issue's wording)."""
    after = samples[min(warmup, len(samples)) - 1 :]
    base = after[0]
    half = max(1, len(after) // 2)
    peaks = max(after[half:] or after) / max(after[:half]) - 1
    growth = samples[-1] / base - 1
    peak = max(after) / base - 1
    return ("flat" if peaks < GROWTH_LIMIT else "GROWS"), peaks, growth, peak


def wrk_round(script: Path, url: str, clients: int, inbox: Path, until: int) -> dict[str, int]:
    """One round: wrk stops its own thread after the round's requests (Lua), but its main thread sleeps out
    ``-d``; SIGINT (to its pid) ends that sleep as soon as inbox/ holds ``until`` jobs, and wrk reports."""
    wrk = subprocess.Popen(["wrk", "-t1", f"-c{clients}", "-d600s", "--timeout", "10s", "-s", str(script), url],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while len(os.listdir(inbox)) < until and wrk.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(0.2)  # the last answers in flight
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)
        out, _ = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def enqueued_run(work: Path, args: argparse.Namespace) -> int:
    root = work / "root-enqueued"
    init_root(str(root))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(work / "enqueued.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(CHECKOUT / "bin" / "machina-enqueued"), "--port", str(port)],
                            env=env_for(root, args.fsync), stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)  # fmt: skip
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"machina-enqueued did not start: {(work / 'enqueued.log').read_text()}") from None
                time.sleep(0.05)
        script = work / "round.lua"
        script.write_text(LUA.format(body=JOB, token=TOKEN, stop=args.every))
        url = f"http://127.0.0.1:{port}/enqueue"
        print(f"machina-enqueued pid {proc.pid}: RSS before load {rss_kib(proc.pid) / 1024:.1f} MiB; "
              f"{args.requests} requests in rounds of {args.every}, {args.clients} clients, keep-alive, "
              f"fsync {'on' if args.fsync else 'off'}")  # fmt: skip
        print(f"{'requests':>9} {'RSS MiB':>8} {'round req/s':>12} {'errors':>7}")
        sent, errors, samples, largest = 0, 0, [], 0.0
        while sent < args.requests:
            if time.monotonic() - started > args.max_seconds:
                print(f"stopped at {args.max_seconds:.0f} s (--max-seconds)")
                break
            summary = wrk_round(script, url, args.clients, root / "queue" / "inbox", sent + args.every)
            sent += summary["requests"]
            errors += summary["errors"]
            least, most = settled_rss_mib(proc.pid)
            samples.append(least)
            largest = max(largest, most)
            rate = summary["requests"] / (summary["duration_us"] / 1e6)
            print(f"{sent:>9} {samples[-1]:>8.1f} {rate:>12.0f} {summary['errors']:>7}", flush=True)
        jobs = len(os.listdir(root / "queue" / "inbox"))
    finally:
        stop(proc)
        log.close()
    if len(samples) <= WARMUP_ROUNDS:
        print("too few rounds for a verdict")
        return 1
    word, peaks, growth, peak = verdict(samples)
    _, _, early, early_peak = verdict(samples, 2)
    print(f"machina-enqueued over {sent} requests ({errors} errors, {jobs} jobs in inbox/): RSS first "
          f"{samples[0]:.1f}, after warm-up ({WARMUP_ROUNDS * args.every} requests) "
          f"{samples[WARMUP_ROUNDS - 1]:.1f}, last {samples[-1]:.1f}, max {max(samples):.1f} MiB; growth after "
          f"warm-up {growth * 100:+.1f} % (largest sample {peak * 100:+.1f} %); the later half's peak against the "
          f"earlier half's {peaks * 100:+.1f} %: {word}, {'met' if word == 'flat' else 'NOT met'} (target: flat, "
          f"within {GROWTH_LIMIT * 100:.0f} %); after "
          f"{2 * args.every} requests instead: {early * 100:+.1f} % (max {early_peak * 100:+.1f} %); largest "
          f"reading, checkpoints included: {largest:.1f} MiB")  # fmt: skip
    return 0


def worker_run(work: Path, args: argparse.Namespace) -> int:
    from machina.queue import FileQueue, QueueConfig

    root = work / "root-worker"
    init_root(str(root))
    shutil.copytree(CHECKOUT / "examples" / "data", root / "data")
    env = env_for(root, args.fsync)
    log = open(work / "worker.log", "wb")  # noqa: SIM115 - closed below
    procs: list[subprocess.Popen[bytes]] = []
    queue = FileQueue(str(root), QueueConfig(fsync=args.fsync, dedup_ttl_ms=0))
    try:
        procs.append(subprocess.Popen([str(CHECKOUT / "bin" / "machina-toolhost")], env=env, stderr=log,
                                      stdout=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + 30
        while not (root / "run" / "toolhost.sock").exists():
            if time.monotonic() > deadline:
                raise SystemExit("machina-toolhost did not start")
            time.sleep(0.05)
        procs.append(subprocess.Popen([str(CHECKOUT / "bin" / "machina-worker"), "--id", "1"], env=env,
                                      stderr=log, stdout=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        worker = procs[-1].pid
        every = max(1, args.worker_jobs // 10)
        print(f"\nmachina-worker pid {worker}: {args.worker_jobs} no-op jobs in rounds of {every}")
        print(f"{'jobs':>9} {'worker MiB':>11} {'children MiB':>13} {'toolhost MiB':>13}")
        done_dir = root / "queue" / "done"
        samples, total = [], 0
        while total < args.worker_jobs:
            for _ in range(every):
                queue.enqueue(json.loads(JOB))
            total += every
            deadline = time.monotonic() + 300
            while len(os.listdir(done_dir)) < total:
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    raise SystemExit("the worker stopped draining")
                time.sleep(0.2)
            children = sum(rss_kib(p) for p in child_pids(worker)) / 1024
            samples.append(settled_rss_mib(worker)[0])
            print(
                f"{total:>9} {samples[-1]:>11.1f} {children:>13.1f} {rss_kib(procs[0].pid) / 1024:>13.1f}", flush=True
            )
    finally:
        queue.close()
        for proc in reversed(procs):
            stop(proc)
        log.close()
    if len(samples) > WARMUP_ROUNDS:
        word, peaks, growth, peak = verdict(samples)
        print(f"machina-worker: RSS growth after warm-up {growth * 100:+.1f} % (max {peak * 100:+.1f} %); the later "
              f"half's peak against the earlier half's {peaks * 100:+.1f} %: {word}")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=10_000, help="requests per round (one RSS sample each: the "
                        "least of ten readings over two seconds)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--fsync", action="store_true", help="MACHINA_WAL_FSYNC=1 (default off)")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop the requests after this long")
    parser.add_argument("--worker-jobs", type=int, default=0, help="also the worker's RSS over N no-op jobs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        rc = enqueued_run(work, args)
        if args.worker_jobs:
            rc = worker_run(work, args) or rc
    finally:
        discard(work)
    return rc


if __name__ == "__main__":
    sys.exit(main())

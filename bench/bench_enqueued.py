"""machina-enqueued under load: POST /enqueue req/s and latency, fsync on and off, 1 and 32 clients, with and
without keep-alive (memory over 200k requests: ``bench_enqueued_memory.py``).

Everything runs on loopback against the real ``bin/machina-enqueued`` with token auth, driven by wrk (a
Lua script for the POST, its headers and a JSON summary).  Baselines are measured right before each point,
so ratios survive a noisy, shared machine:

* ``GET /health`` on the same server (HTTP stack, no auth, no queue): the server's ceiling;
* ``FileQueue.enqueue`` in-process with as many threads as clients: the queue's own cost without HTTP,
  the ceiling of what the daemon can answer (with fsync on, also the disk's).

Beside each fsync-on keep-alive target, the disk's ceiling: the same file-system work (WAL fdatasync shared
by the clients, job file created and placed) replayed with as many threads and nothing else, right after the
point (``bench_disk.py``).

Bounded: each point runs ``BENCH_ENQUEUED_SECONDS`` (default 5).  All files live in a temporary directory
removed at the end; every process started is stopped.  Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from machina.queue import FileQueue, QueueConfig  # noqa: E402
from machina.root import init_root  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_disk import ceiling_line, discard, replay  # noqa: E402

TOKEN = "bench-token-" + "0123456789abcdef"
JOB = '{"goal_id":"goal.BENCH.v1","inputs":{"path":"data/app.log","pattern":"ERROR"}}'
SECONDS = float(os.environ.get("BENCH_ENQUEUED_SECONDS", "5"))
CPP_REFERENCE = {1: 1800, 32: 2200}  # the earlier C++ server on this machine (issue 4), not durable
TARGETS = {1: 1800, 32: 4000}  # req/s, fsync on, keep-alive, 0 errors (issue 16)

SUMMARY_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def lua_script(directory: Path, name: str, method: str, keepalive: bool, stop_after: int = 0) -> Path:
    lines = [f'wrk.method = "{method}"']
    if method == "POST":
        lines += [
            f"wrk.body = '{JOB}'",
            'wrk.headers["Content-Type"] = "application/json"',
            f'wrk.headers["Authorization"] = "Bearer {TOKEN}"',
        ]
    if not keepalive:
        lines.append('wrk.headers["Connection"] = "close"')
    if stop_after:
        lines += [
            "local count = 0",
            f"response = function(status, headers, body) count = count + 1; "
            f"if count >= {stop_after} then wrk.thread:stop() end end",
        ]
    path = directory / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + SUMMARY_LUA)
    return path


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    summary["rps"] = summary["requests"] / (summary["duration_us"] / 1e6)
    return summary


class Daemon:
    def __init__(self, work: Path, fsync: bool) -> None:
        self.root = work / f"root-fsync{int(fsync)}-{time.monotonic_ns()}"
        init_root(str(self.root))
        self.log = work / f"{self.root.name}.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MACHINA_")}
        env.update(
            MACHINA_ENV_FILE="/dev/null",
            MACHINA_ROOT=str(self.root),
            MACHINA_API_TOKEN=TOKEN,
            MACHINA_WAL_FSYNC="1" if fsync else "0",
            MACHINA_LOG_LEVEL="warning",
        )
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [str(CHECKOUT / "bin" / "machina-enqueued"), "--port", str(self.port)],
                env=env,
                stderr=err,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}") from None
                time.sleep(0.05)
        raise RuntimeError("daemon not listening after 30 s")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def jobs(self) -> int:
        return len(os.listdir(self.root / "queue" / "inbox"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- baselines ---------------------------------------------------------------------------------------------


def queue_in_process(work: Path, fsync: bool, threads: int, seconds: float = 3.0) -> float:
    root = work / f"inproc-{int(fsync)}-{threads}-{time.monotonic_ns()}"
    init_root(str(root))
    queue = FileQueue(str(root), QueueConfig(fsync=fsync))
    body = json.loads(JOB)
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(i: int) -> None:
        while time.monotonic() < stop:
            queue.enqueue(body)
            counts[i] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    elapsed = time.monotonic() - started
    queue.close()
    return sum(counts) / elapsed


# --- the runs ----------------------------------------------------------------------------------------------


def matrix(work: Path) -> list[dict[str, Any]]:
    """Each point next to its baselines, measured just before it: the machine's load drifts within a run."""
    rows = []
    for fsync in (False, True):
        daemon = Daemon(work, fsync)
        try:
            for keepalive in (True, False):
                health = lua_script(work, f"health-{keepalive}", "GET", keepalive)
                post = lua_script(work, f"post-{keepalive}", "POST", keepalive)
                for clients in (1, 32):
                    row: dict[str, Any] = {"fsync": fsync, "keepalive": keepalive, "clients": clients}
                    row["queue_rps"] = queue_in_process(work, fsync, clients, seconds=2.0)
                    row["health_rps"] = wrk(daemon.url("/health"), health, clients, SECONDS)["rps"]
                    jobs_before = daemon.jobs()
                    row.update(wrk(daemon.url("/enqueue"), post, clients, SECONDS))
                    row["jobs_written"] = daemon.jobs() - jobs_before
                    if fsync and keepalive:  # the same file-system work alone, right after (bench_disk.py)
                        row["disk_name"] = f"enqueue x{clients}"
                        row["disk"] = replay(row["disk_name"], 2.0, str(work))
                    rows.append(row)
                    print_row(row)
        finally:
            daemon.stop()
        discard(daemon.root)
    return rows


def print_row(row: dict[str, Any]) -> None:
    print(
        f"  fsync={int(row['fsync'])} keepalive={int(row['keepalive'])} clients={row['clients']:>2}: "
        f"{row['rps']:6.0f} req/s  p50 {row['p50_us'] / 1000:6.2f} ms  p99 {row['p99_us'] / 1000:7.2f} ms  "
        f"errors {row['errors']}  jobs {row['jobs_written']}/{row['requests']} answered"
        f"  | baselines: /health {row['health_rps']:5.0f}/s, in-process queue ({row['clients']} threads) "
        f"{row['queue_rps']:5.0f}/s; enqueue/queue {row['rps'] / row['queue_rps']:.2f}",
        flush=True,
    )


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-enqueued-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {SECONDS:.0f} s per point")
        print("POST /enqueue (token auth) on loopback, wrk -t1; baselines measured just before each point:")
        rows = matrix(work)
        print("ratios (fsync=1, keep-alive):")
        for row in rows:
            if row["fsync"] and row["keepalive"]:
                c = row["clients"]
                print(
                    f"  {c:>2} clients: {row['rps']:.0f} req/s = {row['rps'] / row['queue_rps']:.2f} x in-process "
                    f"queue, {row['rps'] / row['health_rps']:.2f} x /health, "
                    f"{row['rps'] / CPP_REFERENCE[c]:.2f} x the C++ server's {CPP_REFERENCE[c]} (not durable)"
                )
                met = "met" if row["rps"] >= TARGETS[c] and not row["errors"] else "NOT met"
                print(f"      target >= {TARGETS[c]} req/s with 0 errors: {row['rps'] / TARGETS[c]:.2f} x, {met}")
                print(ceiling_line(row["disk_name"], row["disk"], row["rps"], TARGETS[c], " req/s"))
        print("memory over 200k requests: python bench/bench_enqueued_memory.py (run by make bench too)")
    finally:
        discard(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""machina-enqueued under load: POST /enqueue req/s and latency, fsync on and off, 1 and 32 clients, with and
without keep-alive; then memory over a long run.

Everything runs on loopback against the real ``bin/machina-enqueued`` with token auth, driven by wrk (a
Lua script for the POST, its headers and a JSON summary).  Baselines measured in the same run, so ratios
survive a noisy, shared machine:

* ``GET /health`` on the same server (HTTP stack, no auth, no queue): the server's ceiling;
* ``FileQueue.enqueue`` in-process, 1 and 32 threads: the queue's own cost, without HTTP;
* the disk's durable-write floor: write+fsync a file, rename it, fdatasync a log, fsync the directory, one
  job at a time (what one client waiting for each answer can at best get with fsync on).

Bounded: each point runs ``BENCH_ENQUEUED_SECONDS`` (default 5); the memory run stops at
``BENCH_ENQUEUED_SOAK_REQUESTS`` (default 200000) or ``BENCH_ENQUEUED_SOAK_SECONDS`` (default 120),
whichever comes first.  All files live in a temporary directory removed at the end; every process started
is stopped.  Prints figures; asserts nothing about speed.
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from machina.queue import FileQueue, QueueConfig  # noqa: E402
from machina.root import init_root  # noqa: E402

TOKEN = "bench-token-" + "0123456789abcdef"
JOB = '{"goal_id":"goal.BENCH.v1","inputs":{"path":"data/app.log","pattern":"ERROR"}}'
SECONDS = float(os.environ.get("BENCH_ENQUEUED_SECONDS", "5"))
SOAK_REQUESTS = int(os.environ.get("BENCH_ENQUEUED_SOAK_REQUESTS", "200000"))
SOAK_SECONDS = float(os.environ.get("BENCH_ENQUEUED_SOAK_SECONDS", "120"))
CPP_REFERENCE = {1: 1800, 32: 2200}  # the earlier C++ server on this machine (issue 4), not durable

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


def disk_floor(work: Path, seconds: float = 2.0) -> float:
    """Durable jobs per second one writer gets from this disk by itself: 3 syncs per job, as the queue does."""
    base = work / f"floor-{time.monotonic_ns()}"
    (base / "tmp").mkdir(parents=True)
    (base / "inbox").mkdir()
    dir_fd = os.open(base / "inbox", os.O_RDONLY)
    log_fd = os.open(base / "wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    done, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            tmp = base / "tmp" / f"{done}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, JOB.encode())
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, base / "inbox" / f"{done}.json")
            os.write(log_fd, b'{"t":"ENQ"}\n')
            os.fdatasync(log_fd)
            os.fsync(dir_fd)
            done += 1
    finally:
        os.close(dir_fd)
        os.close(log_fd)
    return done / (time.monotonic() - started)


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
    rows = []
    for fsync in (False, True):
        daemon = Daemon(work, fsync)
        try:
            for keepalive in (True, False):
                health = lua_script(work, f"health-{keepalive}", "GET", keepalive)
                post = lua_script(work, f"post-{keepalive}", "POST", keepalive)
                for clients in (1, 32):
                    base = wrk(daemon.url("/health"), health, clients, SECONDS)
                    jobs_before = daemon.jobs()
                    result = wrk(daemon.url("/enqueue"), post, clients, SECONDS)
                    result["jobs_written"] = daemon.jobs() - jobs_before
                    rows.append(
                        {
                            "fsync": fsync,
                            "keepalive": keepalive,
                            "clients": clients,
                            **result,
                            "health_rps": base["rps"],
                        }
                    )
                    print_row(rows[-1])
        finally:
            daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
    return rows


def print_row(row: dict[str, Any]) -> None:
    print(
        f"  fsync={int(row['fsync'])} keepalive={int(row['keepalive'])} clients={row['clients']:>2}: "
        f"{row['rps']:8.0f} req/s  p50 {row['p50_us'] / 1000:6.2f} ms  p99 {row['p99_us'] / 1000:7.2f} ms  "
        f"errors {row['errors']}  jobs {row['jobs_written']}/{row['requests']}  "
        f"| /health {row['health_rps']:7.0f} req/s  enqueue/health {row['rps'] / row['health_rps']:.2f}",
        flush=True,
    )


def soak(work: Path) -> dict[str, Any]:
    """RSS of the daemon sampled every second over one long keep-alive run (fsync on, 32 clients)."""
    daemon = Daemon(work, fsync=True)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.wait(1.0):
            samples.append((time.monotonic() - started, daemon.rss_kib()))

    try:
        rss_start = daemon.rss_kib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        script = lua_script(work, "soak", "POST", True, stop_after=SOAK_REQUESTS)
        result = wrk(daemon.url("/enqueue"), script, 32, SOAK_SECONDS)
        stop.set()
        sampler.join()
        result["jobs_written"] = daemon.jobs()
    finally:
        stop.set()
        daemon.stop()
        shutil.rmtree(daemon.root, ignore_errors=True)
    rss = [kib for _, kib in samples]
    warm = rss[len(rss) // 5 :] or rss  # after the first fifth: pools, caches and buffers have grown
    return {
        **result,
        "rss_start_mib": rss_start / 1024,
        "rss_warm_mib": warm[0] / 1024,
        "rss_end_mib": rss[-1] / 1024 if rss else 0,
        "rss_max_mib": max(rss) / 1024 if rss else 0,
        "samples": len(rss),
    }


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-enqueued-"))
    try:
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {SECONDS:.0f} s per point")
        floor = disk_floor(work)
        inproc = {(f, t): queue_in_process(work, f, t) for f in (False, True) for t in (1, 32)}
        print(f"baseline: disk durable-write floor, one writer: {floor:.0f} jobs/s")
        for (fsync, threads), rate in inproc.items():
            print(
                f"baseline: FileQueue.enqueue in-process, fsync={int(fsync)}, {threads:>2} threads: {rate:7.0f} jobs/s"
            )
        print("POST /enqueue (token auth) on loopback, wrk -t1:")
        rows = matrix(work)
        print("ratios (fsync=1, keep-alive):")
        for row in rows:
            if row["fsync"] and row["keepalive"]:
                c = row["clients"]
                print(
                    f"  {c:>2} clients: {row['rps']:.0f} req/s = {row['rps'] / inproc[(True, min(c, 32))]:.2f} x "
                    f"in-process queue, {row['rps'] / floor:.2f} x disk floor, "
                    f"{row['rps'] / CPP_REFERENCE[c]:.2f} x the C++ server's {CPP_REFERENCE[c]} (not durable)"
                )
        print(f"memory: fsync=1, 32 clients, keep-alive, up to {SOAK_REQUESTS} requests or {SOAK_SECONDS:.0f} s")
        s = soak(work)
        print(
            f"  {s['requests']} requests in {s['duration_us'] / 1e6:.0f} s ({s['rps']:.0f} req/s, "
            f"errors {s['errors']}, jobs {s['jobs_written']}); RSS start {s['rss_start_mib']:.1f} MiB, "
            f"after warm-up {s['rss_warm_mib']:.1f}, end {s['rss_end_mib']:.1f}, max {s['rss_max_mib']:.1f} "
            f"({s['samples']} samples)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

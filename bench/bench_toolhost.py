"""machina-toolhost: the cost of a sandboxed tool call, against a bare fork+exec measured in the same run.

Measures, through a real toolhost on its Unix socket (seccomp on, bubblewrap, tools as uid 65534 when run
as root):

* AID.SHELL.EXEC.v1 running ``true``: a fresh bubblewrap sandbox per call;
* AID.NOOP.v1: inline in the toolhost (it touches nothing: no executor since issue 16);
* AID.PROC.SELF_METRICS.v1 and AID.FILE.READ.v1: built-ins in a pre-started pooled executor;
* the same SELF_METRICS with MACHINA_TOOLHOST_ISOLATE=1 (every call gets an executor no call used before);
* calls/s with 2 concurrent callers;

and, as baselines, ``subprocess.run(["true"])`` and ``sandboxed_run(["/usr/bin/true"])`` in this process.
Targets from the issue: fresh-sandbox p50 < 15 ms, pooled built-in p50 < 2 ms.  Figures only, no asserts:
the machine is shared and noisy, read the ratios.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from machina import config
from machina.root import init_root
from machina.sandbox import resolve_policy, sandboxed_run
from machina.testing.toolhost import running_toolhost

#: A pooled built-in that needs no input: what the pool rows measure (NOOP runs inline).
POOLED = "AID.PROC.SELF_METRICS.v1"

ENV = {"MACHINA_PERMISSION_MODE": "open", "MACHINA_SECCOMP_ENABLE": "1", "MACHINA_TOOLHOST_ISOLATE": "0"}


def timed(n: int, fn: Callable[[], object], warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, samples: list[float], base: float) -> None:
    p50 = statistics.median(samples)
    print(f"{label:48} p50 {p50:8.3f} ms   p99 {pct(samples, 0.99):8.3f} ms   x{p50 / base:6.1f} bare")


def throughput(make_call: Callable[[], Callable[[], object]], seconds: float = 3.0, callers: int = 2) -> float:
    counts = [0] * callers
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        call = make_call()
        while time.monotonic() < stop:
            call()
            counts[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def ok(reply) -> None:
    if not reply.ok:
        raise SystemExit(f"benchmark call failed: {reply.status}: {reply.error}")


def main() -> int:
    print(f"pid {os.getpid()}, uid {os.geteuid()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    bare = timed(300, lambda: subprocess.run(["true"], check=True))
    base = statistics.median(bare)
    row('subprocess.run(["true"])  (baseline)', bare, base)

    cfg = config.load(environ={"MACHINA_ENV_FILE": "/dev/null", "MACHINA_SECCOMP_ENABLE": "1"})
    policy = resolve_policy(cfg)
    direct = timed(
        150, lambda: sandboxed_run(["/usr/bin/true"], policy=policy, timeout_s=10, stdout_max=1024, stderr_max=1024)
    )
    row("sandboxed_run(true) in-process", direct, base)

    with tempfile.TemporaryDirectory(prefix="machina-bench-") as tmp:
        root = os.path.join(tmp, "root")
        init_root(root)
        os.makedirs(os.path.join(root, "data"))
        with open(os.path.join(root, "data", "small.txt"), "w") as handle:
            handle.write("hello\n" * 100)
        with running_toolhost(root, env=ENV) as host:
            client = host.client
            time.sleep(1.0)  # let the pools fill
            shell = timed(200, lambda: ok(client.call("AID.SHELL.EXEC.v1", {"cmd": ["true"]})))
            row("toolhost SHELL.EXEC true      (fresh sandbox)", shell, base)
            noop = timed(2000, lambda: ok(client.call("AID.NOOP.v1", {})), warmup=50)
            row("toolhost NOOP                 (inline)", noop, base)
            pooled = timed(2000, lambda: ok(client.call(POOLED, {})), warmup=50)
            row("toolhost SELF_METRICS         (pooled)", pooled, base)
            read = timed(1000, lambda: ok(client.call("AID.FILE.READ.v1", {"path": "data/small.txt"})), warmup=50)
            row("toolhost FILE.READ 600 B      (pooled)", read, base)

            def noop_caller() -> Callable[[], object]:
                own = host.new_client()
                return lambda: ok(own.call(POOLED, {}))

            def shell_caller() -> Callable[[], object]:
                own = host.new_client()
                return lambda: ok(own.call("AID.SHELL.EXEC.v1", {"cmd": ["true"]}))

            noop_rate = throughput(noop_caller)
            shell_rate = throughput(shell_caller)
            bare_rate = throughput(lambda: lambda: subprocess.run(["true"], check=True))

        isolated_root = os.path.join(tmp, "isolated")
        init_root(isolated_root)
        with running_toolhost(isolated_root, env={**ENV, "MACHINA_TOOLHOST_ISOLATE": "1"}) as host:
            time.sleep(1.0)
            # Single-use executors: latency holds while the pool keeps up; sustained calls wait for spawns.
            spaced = []
            for _ in range(30):
                started = time.perf_counter()
                ok(host.client.call(POOLED, {}))
                spaced.append((time.perf_counter() - started) * 1000)
                time.sleep(0.3)
            row("toolhost SELF_METRICS, ISOLATE=1, spaced 300 ms", spaced, base)
            isolated_rate = throughput(lambda: lambda: ok(host.client.call(POOLED, {})), callers=1)

    print()
    print(f"{'2 concurrent callers, calls/s':48} SELF_METRICS {noop_rate:8.0f}   SHELL.EXEC true {shell_rate:7.0f}")
    print(f"{'2 concurrent bare subprocess.run(true), runs/s':48} {bare_rate:13.0f}")
    print(f"{'ISOLATE=1 sustained SELF_METRICS, 1 caller, calls/s':48} {isolated_rate:13.0f}")
    print()
    targets = (("fresh-sandbox", statistics.median(shell), 15.0), ("pooled", statistics.median(noop), 2.0))
    for label, p50, limit in targets:
        print(f"target {label} call p50 < {limit:g} ms: {p50:.3f} ms, {'met' if p50 < limit else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU_CENTROID selection throughput: 10k tools x 384 dims on numpy (batched and single), cupy where a GPU is.

Figures, all measured in this run:
  * baseline: the bare numpy expression (goals @ centroids.T, argmax) for the same batch;
  * CentroidMatrix.rank, batched (many goals as one matrix product) and single (one goal per call), top-1
    and top-5 -- the ranking code the service runs;
  * hash_embed texts/s (the goal's own embedding, paid once per selection);
  * the service end to end: one `select` request per round trip over its real Unix socket, 14-tool menu;
  * cupy at 10k and 1M tools, as a ratio to numpy at the same size (only when cupy sees a GPU).

Selections/s = goals ranked / wall-clock seconds (best of REPEATS).  Target: >= 10k/s numpy at 10k x 384
batched.  Nothing here asserts a timing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

from machina.embed.arrays import gpu_module, to_host
from machina.embed.client import EmbedClient
from machina.embed.engine import EmbedEngine, EngineSettings
from machina.embed.hashing import hash_embed
from machina.embed.history import SuccessHistory
from machina.embed.ranking import CentroidMatrix, normalise_rows
from machina.embed.service import EmbedService
from machina.manifests.tools import builtin_toolpack, read_toolpack

DIM = 384
TOOLS = 10_000
BATCH = 2048
SINGLE = 300
REPEATS = 3


def best_of(func: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    return normalise_rows(rng.standard_normal((rows, DIM)).astype(np.float32))


def line(label: str, per_second: float, baseline: float | None = None) -> None:
    ratio = f"  ({per_second / baseline:5.2f}x baseline)" if baseline else ""
    print(f"  {label:<52} {per_second:>12,.0f} /s{ratio}", flush=True)


def bench_numpy(centroids: np.ndarray, goals: np.ndarray) -> float:
    print(f"numpy {np.__version__}, {TOOLS:,} tools x {DIM} dims, batch of {BATCH} goals, {os.cpu_count()} cores")
    raw = best_of(lambda: np.argmax(goals @ centroids.T, axis=1))
    baseline = BATCH / raw
    line("baseline: bare numpy matmul + argmax, batched", baseline)
    matrix = CentroidMatrix(centroids, np)
    batched = BATCH / best_of(lambda: matrix.rank(goals, 1))
    line("CentroidMatrix.rank top-1, batched", batched, baseline)
    line("CentroidMatrix.rank top-5, batched", BATCH / best_of(lambda: matrix.rank(goals, 5)), baseline)
    single = SINGLE / best_of(lambda: [matrix.rank(g, 1) for g in goals[:SINGLE]])
    line("CentroidMatrix.rank top-1, single goal per call", single, baseline)
    print(f"  target >= 10,000/s batched: {'met' if batched >= 10_000 else 'NOT met'} ({batched:,.0f}/s)")
    return batched


def bench_hash() -> None:
    texts = [f"scan the application log number {i} for error lines and report them" for i in range(2000)]
    hash_embed(texts[:10], DIM)
    line("hash_embed, one goal text of 12 words", len(texts) / best_of(lambda: hash_embed(texts, DIM)))


def bench_service() -> None:
    tools = read_toolpack(builtin_toolpack())
    menu = [
        {"sid": f"SID{i:04d}", "aid": t.aid, "name": t.name, "tags": list(t.tags), "description": t.description}
        for i, t in enumerate(tools, start=1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbedEngine(EngineSettings(128, 0.1, 4096, 20000, 50000), SuccessHistory(tmp, 256, False), xp=np)
        service = EmbedService(engine, os.path.join(tmp, "embed.sock"))
        service.start()
        stop = threading.Event()
        thread = threading.Thread(target=service.serve, args=(stop,), daemon=True)
        thread.start()
        try:
            with EmbedClient(service.socket_path) as client:
                client.select("warm up", menu)
                goals = [f"scan app{i}.log for ERROR lines" for i in range(SINGLE)]
                elapsed = best_of(lambda: [client.select(g, menu) for g in goals])
                line(f"service select over its socket, {len(menu)}-tool menu, dim 128", SINGLE / elapsed)
        finally:
            stop.set()
            thread.join()
            service.close()


def bench_cupy(cupy: ModuleType, numpy_batched: float) -> None:
    rng = np.random.default_rng(1)
    goals = unit(rng, BATCH)
    for tools in (TOOLS, 1_000_000):
        centroids = unit(rng, tools)
        matrix = CentroidMatrix(centroids, cupy)

        def run(m: CentroidMatrix = matrix) -> None:
            m.rank(goals, 1)
            cupy.cuda.Device().synchronize()

        run()
        gpu = BATCH / best_of(run)
        cpu = numpy_batched if tools == TOOLS else BATCH / best_of(lambda c=centroids: np_rank(c, goals), 1)
        print(f"  cupy {tools:>9,} tools: {gpu:>12,.0f} /s   numpy {cpu:>10,.0f} /s   ratio {gpu / cpu:6.1f}x")
        del matrix
        cupy.get_default_memory_pool().free_all_blocks()
    sample = unit(rng, 1000)
    gap = np.abs(to_host(CentroidMatrix(sample, cupy).scores(goals)) - CentroidMatrix(sample, np).scores(goals)).max()
    print(f"  largest |cupy - numpy| score difference: {gap:.2e}")


def np_rank(centroids: np.ndarray, goals: np.ndarray) -> None:
    CentroidMatrix(centroids, np).rank(goals, 1)


def main() -> int:
    rng = np.random.default_rng(0)
    batched = bench_numpy(unit(rng, TOOLS), unit(rng, BATCH))
    bench_hash()
    bench_service()
    cupy = gpu_module()
    if cupy is None:
        print("cupy: no GPU: skipped (cupy not installed or no CUDA device answers)")
    else:
        bench_cupy(cupy, batched)
    return 0


if __name__ == "__main__":
    sys.exit(main())

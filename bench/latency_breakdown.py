"""Where an idle no-op job's enqueue -> done time goes, one job at a time with one idle worker.

    python bench/latency_breakdown.py [--jobs N]

The real toolhost and one ``bin/machina-worker`` on a fresh root (``bench_worker``'s helpers); each job is
enqueued in-process (durable when the call returns) and waited for.  Printed p50s: the enqueue call; enqueue
return -> the worker's CLAIM record (WAL ``ts``, millisecond clock: pickup); enqueue return -> the run log's
``start`` event; ``start`` -> the last event; the last event -> the result's ``finished_ms``.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_worker as b

from machina.queue import FileQueue, QueueConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=80)
    args = parser.parse_args()
    rows: list[tuple[float, float, float, float]] = []
    returned: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        root = b.new_root(Path(tmp), "lat")
        env = b.env_for(root, True)
        queue = FileQueue(str(root), QueueConfig(fsync=True, dedup_ttl_ms=0))
        with b.toolhost(root, env):
            workers = b.Workers(root, env, 1)
            try:
                workers.wait_ready()
                for i in range(args.jobs + 5):
                    t0 = time.time()
                    name = queue.enqueue({"goal_id": "goal.NOOP.v1"}).name
                    t1 = time.time()
                    result = b._wait_finished(queue, name).results[-1]
                    with open(result["result"]["log_path"], encoding="utf-8") as handle:
                        events = [json.loads(line) for line in handle]
                    if i >= 5:  # warm-up
                        returned.append((name, t1))
                        start, last = events[0]["ts"], events[-1]["ts"]
                        rows.append((t1 - t0, start - t1, last - start, result["finished_ms"] / 1000 - last))
                    time.sleep(0.02)
            finally:
                workers.stop()
                queue.close()
        claims = {}
        for segment in glob.glob(str(root / "queue" / "wal" / "seg_*.wal")):
            with open(segment, "rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("t") == "CLAIM":
                        claims[record["file"]] = record["ts"] / 1000
    labels = ("enqueue call", "enqueue return -> run log start", "run log start -> last event",
              "last event -> result recorded")  # fmt: skip
    for k, label in enumerate(labels):
        print(f"{label:36} p50 {statistics.median(r[k] for r in rows) * 1000:6.2f} ms")
    pickup = [claims[n] - t for n, t in returned if n in claims]
    if pickup:
        print(f"{'enqueue return -> CLAIM record':36} p50 {statistics.median(pickup) * 1000:6.2f} ms (ms clock)")
    total = statistics.median(sum(r) for r in rows) * 1000
    print(f"{'enqueue call -> result recorded':36} p50 {total:6.2f} ms over {len(rows)} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

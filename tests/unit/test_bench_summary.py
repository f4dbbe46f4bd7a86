"""bench/run_all.py's closing summary: every verdict line again, and the count of targets met."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import CHECKOUT


def _run_all():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_all", Path(CHECKOUT) / "bench" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OUTPUT = """\
workload                                          machina  huey sqlite   ratio  target
enqueue, 1 thread, fsync on                        3126/s      3665/s   0.85x   1.0x NOT met
    disk ceiling (enqueue x1: ...); measured 3126/s = 0.96 x ceiling: the DISK ALONE STOPS the target
enqueue, 8 threads, fsync on                       1137/s      2948/s   0.39x   1.0x NOT met
    disk ceiling (enqueue x8: ...); measured 1137/s = 0.28 x ceiling: the disk allows the target
  target >= 4000 req/s with 0 errors: 1.02 x, met
    disk ceiling (enqueue x32: ...): the DISK ALONE STOPS the target
  target >= 10,000/s batched: met (22,545/s)
metadata of the run, not a verdict: 12 jobs
"""


def test_the_summary_repeats_each_verdict_and_counts_only_targets() -> None:
    run_all = _run_all()
    verdicts = [("bench_x", line.strip()) for line in OUTPUT.splitlines() if run_all.VERDICT.search(line)]
    assert len(verdicts) == 7  # the header and the last line are not verdicts
    text = run_all.summary(verdicts)
    assert "bench_x        enqueue, 8 threads, fsync on" in text
    # A ceiling under a target that was met anyway is not counted as stopping a missed one.
    assert text.splitlines()[-1].startswith("2 of 4 targets met; of the 2 not met, 1 had a disk ceiling under")

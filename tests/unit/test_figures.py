"""Worker figures: counted per job, summed across workers, surviving a restart."""

from __future__ import annotations

from pathlib import Path

from machina.clock import FakeClock
from machina.metrics.figures import DURATION_BUCKETS_S, FiguresWriter, read_all


def test_two_workers_are_summed_and_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    one = FiguresWriter(str(tmp_path), "1", flush_interval=0, clock=clock)
    two = FiguresWriter(str(tmp_path), "2", flush_interval=0, clock=clock)
    one.record_job(True, [("AID.ERROR_SCAN.v1", True, 3.0), ("AID.REPORT_SUMMARY.v1", True, 40.0)])
    two.record_job(False, [("AID.ERROR_SCAN.v1", False, 2000.0)])
    total = read_all(str(tmp_path))
    assert (total.jobs_processed, total.jobs_ok, total.jobs_fail) == (2, 1, 1)
    scan = total.tools["AID.ERROR_SCAN.v1"]
    assert (scan.ok, scan.fail, scan.duration_ms_total) == (1, 1, 2003.0)
    assert scan.buckets[DURATION_BUCKETS_S.index(0.005)] == 1  # 3 ms
    assert scan.buckets[DURATION_BUCKETS_S.index(2.5)] == 2  # cumulative: both are <= 2.5 s
    restarted = FiguresWriter(str(tmp_path), "1", flush_interval=0, clock=clock)
    restarted.record_job(True)
    assert read_all(str(tmp_path)).jobs_processed == 3


def test_flushes_are_rate_limited_and_close_flushes(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = FiguresWriter(str(tmp_path), "1", flush_interval=1.0, clock=clock)
    writer.record_job(True)
    writer.record_job(True)
    assert read_all(str(tmp_path)).jobs_processed == 1
    clock.advance(1.5)
    writer.record_job(True)
    assert read_all(str(tmp_path)).jobs_processed == 3
    writer.record_job(False)
    writer.flush()
    assert read_all(str(tmp_path)).jobs_fail == 1


def test_a_corrupt_file_counts_from_zero_without_breaking_the_others(tmp_path: Path) -> None:
    FiguresWriter(str(tmp_path), "1", flush_interval=0).record_job(True)
    (tmp_path / "metrics" / "worker-2.json").write_text("{torn")
    assert read_all(str(tmp_path)).jobs_ok == 1
    assert read_all(str(tmp_path / "absent")).jobs_processed == 0

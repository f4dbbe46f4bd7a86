"""The benchmarks' verdicts (run_all's closing summary, bench_enqueued_memory's "flat", bench_worker's sustained
run), profile_queue's stage timers and sandbox_parts' variants."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from machina.queue import fscore, fsenqueue
from machina.queue.names import JobNamer
from machina.queue.wal import WalWriter
from machina.root import init_root
from tests.conftest import CHECKOUT


def _bench(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, Path(CHECKOUT) / "bench" / f"{name}.py")
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
enqueue, 8 threads, fsync off                      5915/s     25732/s   0.23x   0.5x NOT met
    threads ceiling (enqueue x8 no fsync: ...): THREADS OF ONE PROCESS ALONE STOP the target (the GIL's ...)
metadata of the run, not a verdict: 12 jobs
"""


def test_the_summary_repeats_each_verdict_and_counts_only_targets() -> None:
    run_all = _bench("run_all")
    verdicts = [("bench_x", line.strip()) for line in OUTPUT.splitlines() if run_all.VERDICT.search(line)]
    assert len(verdicts) == 9  # the header and the last line are not verdicts
    text = run_all.summary(verdicts)
    assert "bench_x        enqueue, 8 threads, fsync on" in text
    # A ceiling under a target that was met anyway is not counted as stopping a missed one.
    assert text.splitlines()[-1].startswith("2 of 5 targets met; of the 3 not met, 2 had a ceiling under")


def test_threads_stop_a_target_only_when_processes_doing_the_same_work_would_meet_it() -> None:
    bench_disk = _bench("bench_disk")

    def line(threads: float, processes: float) -> str:
        figures = ({"rate": threads, "cpu_ms": 0.2}, {"rate": processes, "cpu_ms": 0.07})
        return bench_disk.threads_line("enqueue x8 no fsync", *figures, measured=5915, target=12866)

    assert line(7209, 30176).endswith(
        "THREADS OF ONE PROCESS ALONE STOP the target (the GIL's hand-offs, not the disk)"
    )
    assert line(7209, 9000).endswith("the DISK ALONE STOPS the target")  # no process count would meet it either
    assert line(14000, 30176).endswith("the threads of one process allow the target")


# RSS in MiB after each round of 10,000 requests, from two make bench runs (2026-12-06): a saw-tooth as
# checkpoints settle WAL segments, the same band from 60k requests to 200k.
PLATEAU_A = [36.4, 36.5, 45.7, 45.7, 45.8, 53.7, 53.7, 53.7, 53.7, 49.6, 49.6, 49.6, 52.6, 52.6, 52.6, 52.6, 52.6]
PLATEAU_B = [39.1, 39.2, 44.1, 42.1, 42.1, 48.9, 48.9, 55.5, 48.9, 48.9, 59.9, 52.9, 55.9, 54.0, 49.7, 49.7, 55.0]


def test_a_saw_tooth_plateau_is_flat_and_a_steady_rise_is_not() -> None:
    memory = _bench("bench_enqueued_memory")
    assert memory.verdict(PLATEAU_A)[0] == "flat"  # last sample +15 % over the warm-up's: a tooth, not a leak
    assert memory.verdict(PLATEAU_B)[0] == "flat"
    leak = [30 + 0.8 * i for i in range(20)]  # +0.8 MiB every 10,000 requests
    word, peaks, _, _ = memory.verdict(leak)
    assert word == "GROWS" and peaks > 0.1


def test_the_restart_soak_counts_as_left_behind_only_entries_made_after_it_began(tmp_path) -> None:  # type: ignore[no-untyped-def]
    soak = _bench("bench_restart_soak")
    (tmp_path / "fr.8675").write_text("an older file whose pid a soak process got again")
    existing = soak.listing(str(tmp_path))
    (tmp_path / "machina-etc.8675").mkdir()
    (tmp_path / "other.99").write_text("")
    assert soak.named_after(str(tmp_path), {8675}, existing) == ["machina-etc.8675"]


def test_a_process_replay_with_a_failed_process_raises_instead_of_printing_a_lower_ceiling(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bench_disk = _bench("bench_disk")  # a fresh module: the failure below stays in it

    def fails(self) -> None:  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    bench_disk._Replay.enqueue = fails
    with pytest.raises(RuntimeError, match="8 of 8 replay processes failed"):
        bench_disk.replay_in_processes("enqueue x8 no fsync", 0.2, str(tmp_path))
    assert os.listdir(tmp_path) == []  # its tree is removed all the same


def test_a_sustained_fall_is_called_a_growing_cost_only_when_the_cpu_per_job_grew_with_it() -> None:
    bench_worker = _bench("bench_worker")
    verdict = bench_worker.sustained_verdict

    assert verdict((300.0, 250.0), (4.8, 9.0)) == "holds"  # 0.83x: within the bound, whatever the CPU did
    assert verdict((300.0, 180.0), (4.8, 6.0)) == "FALLS: a cost grows with the jobs done"  # CPU x1.25
    assert verdict((300.0, 180.0), (0.0, 0.0)) == "FALLS: a cost grows with the jobs done"  # CPU not known
    assert verdict((300.0, 180.0), (4.8, 5.0)).startswith("FALLS with the CPU per job flat")


def test_the_cpu_per_job_of_each_third_counts_every_process_and_leaves_out_the_kernel_share() -> None:
    bench_worker = _bench("bench_worker")

    def cpu(worker: float, child: float, kernel: float) -> dict[str, float]:
        return {"worker": worker, "child": child, "kernel": kernel}

    start = (100, cpu(1.0, 2.0, 0.5))
    samples = [(1100, cpu(3.0, 6.0, 1.5)), (2100, cpu(5.0, 10.0, 2.5))]
    end = (3000, cpu(8.0, 15.0, 4.0))
    # first: (9 - 3) s over 1,000 jobs; last: (23 - 15) s over 900 jobs; the kernel's share is in those already
    first, last = bench_worker._cpu_thirds(start, samples, end)
    assert first == pytest.approx(6.0) and last == pytest.approx(8000 / 900)
    assert bench_worker._cpu_thirds(start, samples[:1], end) == (0.0, 0.0)  # a mark never reached
    assert bench_worker._cpu_thirds((1200, start[1]), samples, end) == (0.0, 0.0)  # drained before the first


def test_each_stage_is_timed_and_the_originals_are_put_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_queue = _bench("profile_queue")
    before = {name: getattr(owner, name) for _, owner, name in profile_queue.STAGES if owner is not None}
    named, appended = vars(JobNamer)["next"], vars(WalWriter)["commit_append"]
    root = tmp_path / "root"
    init_root(str(root))

    assert profile_queue.stages(str(root), fsync=False, jobs=50, replay_s=0.2) == 0

    out = capsys.readouterr().out
    for label, _, _ in profile_queue.STAGES:
        line = next(line for line in out.splitlines() if label in line)
        assert float(re.findall(r"([0-9.]+) us wall", line)[0]) > 0, line  # the stage ran, and was timed
    assert re.search(r"CPU per enqueue +[0-9.]+ us", out)
    assert "replayed alone" in out
    for _, owner, name in profile_queue.STAGES:
        if owner is not None:
            assert getattr(owner, name) is before[name]
    assert vars(JobNamer)["next"] is named and vars(WalWriter)["commit_append"] is appended
    # _write_tmp is QueueCore's: the wrapper put on EnqueueOps is taken away, not left there as a copy.
    assert "_write_tmp" not in vars(fsenqueue.EnqueueOps)
    assert fsenqueue.EnqueueOps._write_tmp is fscore.QueueCore._write_tmp


def test_each_sandbox_variant_leaves_out_its_part_and_nothing_else(tmp_path: Path) -> None:
    parts = _bench("sandbox_parts")
    argv = [
        "/usr/bin/bwrap", "--unshare-pid", "--unshare-net", "--ro-bind", "/usr", "/usr",
        "--ro-bind", "/run/view/1", "/etc", "--add-seccomp-fd", "3", "--add-seccomp-fd", "4", "--",
        parts.PRLIMIT, "--cpu=10", "--", parts.SETPRIV, "--reuid=65534", "--", "/usr/bin/true",
    ]  # fmt: skip
    changed = {name: change(argv) for name, change in parts.variants(str(tmp_path)).items() if "nsswitch" not in name}
    removed = {name: [a for a in argv if a not in new] for name, new in changed.items()}
    assert removed == {
        "whole launch": [],
        "without the network namespace": ["--unshare-net"],
        "without prlimit": [parts.PRLIMIT, "--cpu=10"],
        "without setpriv": [parts.SETPRIV, "--reuid=65534"],
        "without seccomp": ["--add-seccomp-fd", "3", "--add-seccomp-fd", "4"],
    }
    for name, new in changed.items():
        helpers_left = argv.count("--") - (name in {"without prlimit", "without setpriv"})
        assert new[-1] == "/usr/bin/true" and new.count("--") == helpers_left, name
    assert parts.with_etc(argv, "/elsewhere")[6:9] == ["--ro-bind", "/elsewhere", "/etc"]

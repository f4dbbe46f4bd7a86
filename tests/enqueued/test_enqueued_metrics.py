"""GET /metrics and /stats: prometheus-client's parser reads the page; worker figures written by
FiguresWriter (as workers do) appear, summed over workers and kept across worker restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from enqueued_kit import bearer
from prometheus_client.parser import text_string_to_metric_families

from machina.metrics.figures import FiguresWriter


def scrape(daemon: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    answer = requests.get(daemon.url("/metrics"), headers=bearer(), timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def write_figures(state: Path) -> None:
    first = FiguresWriter(str(state), "1", flush_interval=0)
    first.record_job(True, [("AID.FILE.READ.v1", True, 4.0), ("AID.SHELL.EXEC.v1", False, 300.0)])
    first.record_job(False, [("AID.FILE.READ.v1", True, 20.0)])
    first.flush()
    second = FiguresWriter(str(state), "2", flush_interval=0)
    second.record_job(True, [("AID.FILE.READ.v1", False, 2000.0)])
    second.flush()
    restarted = FiguresWriter(str(state), "1", flush_interval=0)  # worker 1 restarted: keeps counting
    restarted.record_job(True, [])
    restarted.flush()


def test_metrics_show_worker_figures_queue_sizes_and_http_counters(token_daemon: Any) -> None:
    write_figures(token_daemon.root / "state")
    assert requests.post(token_daemon.url("/enqueue"), json={"goal_id": "g"}, headers=bearer(), timeout=10).ok
    assert requests.post(token_daemon.url("/enqueue"), data=b"[]", headers=bearer(), timeout=10).status_code == 400
    requests.post(token_daemon.url("/enqueue"), data=b"{}", headers={"Authorization": "Bearer nope"}, timeout=10)
    m = scrape(token_daemon)
    none: tuple[tuple[str, str], ...] = ()
    assert m["machina_jobs_processed_total"][none] == 4
    assert m["machina_jobs_ok_total"][none] == 3
    assert m["machina_jobs_fail_total"][none] == 1
    read = (("aid", "AID.FILE.READ.v1"),)
    shell = (("aid", "AID.SHELL.EXEC.v1"),)
    assert m["machina_tool_ok_total"][read] == 2 and m["machina_tool_fail_total"][read] == 1
    assert m["machina_tool_fail_total"][shell] == 1
    assert m["machina_tool_duration_ms_total"][read] == 2024.0
    assert m["machina_tool_duration_seconds_count"][read] == 3
    assert m["machina_tool_duration_seconds_sum"][read] == 2.024
    assert m["machina_tool_duration_seconds_bucket"][(("aid", "AID.FILE.READ.v1"), ("le", "0.005"))] == 1
    assert m["machina_tool_duration_seconds_bucket"][(("aid", "AID.FILE.READ.v1"), ("le", "2.5"))] == 3
    assert m["machina_tool_duration_seconds_bucket"][(("aid", "AID.FILE.READ.v1"), ("le", "+Inf"))] == 3
    for state in ("inbox", "processing", "retry", "done", "failed", "dlq"):
        assert f"machina_queue_{state}_size" in m
    assert m["machina_queue_inbox_size"][none] == 1
    assert m["machina_queue_events_total"][(("event", "enqueued"),)] == 1
    requests_total = m["machina_http_requests_total"]
    assert requests_total[(("code", "200"), ("endpoint", "enqueue"))] == 1
    assert requests_total[(("code", "400"), ("endpoint", "enqueue"))] == 1
    assert requests_total[(("code", "401"), ("endpoint", "enqueue"))] == 1
    assert m["machina_auth_failures_total"][(("reason", "bad_token"),)] == 1


def test_stats_answers_sizes_counters_and_job_figures(token_daemon: Any) -> None:
    write_figures(token_daemon.root / "state")
    requests.post(token_daemon.url("/enqueue"), json={"goal_id": "g"}, headers=bearer(), timeout=10)
    doc = requests.get(token_daemon.url("/stats"), headers=bearer(), timeout=10).json()
    assert doc["ok"] is True
    assert doc["sizes"]["inbox"] == 1 and doc["counters"]["enqueued"] == 1
    assert doc["jobs"] == {"processed": 4, "ok": 3, "fail": 1}


def test_figures_survive_a_daemon_restart(token_daemon: Any) -> None:
    write_figures(token_daemon.root / "state")
    assert token_daemon.stop() == 0
    token_daemon.start()
    assert scrape(token_daemon)["machina_jobs_processed_total"][()] == 4

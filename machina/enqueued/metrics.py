"""``GET /metrics``: prometheus-client, on a registry of our own (never the global default one).

Two kinds of figures:

* this process's own, kept as prometheus-client counters: HTTP requests by endpoint and code
  (``machina_http_requests_total``), dedup hits, auth failures by reason, rate-limited requests;
* the suite's, read at scrape time by :class:`SuiteCollector` from the files that hold them: queue sizes
  and transition counters (``queue.stats()``: the directories and the WAL of every process) and the job and
  tool figures every worker writes (:func:`machina.metrics.figures.read_all`), so they cover all workers and
  survive their restarts, and this daemon's restart too.

Names follow the manual: ``machina_jobs_processed_total``, ``machina_jobs_ok_total``,
``machina_jobs_fail_total``, ``machina_queue_<state>_size``, ``machina_tool_ok_total{aid}``,
``machina_tool_fail_total{aid}``, ``machina_tool_duration_ms_total{aid}``, plus the
``machina_tool_duration_seconds`` histogram.  Labels only ever hold fixed words, status codes and tool
AIDs: no secret, path or client value can reach a metric.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from machina.metrics.figures import DURATION_BUCKETS_S, read_all
from machina.queue import STATES, BaseQueue

log = logging.getLogger(__name__)

#: The ``endpoint`` label's values: fixed names, never the raw path.
ENDPOINTS = ("enqueue", "health", "stats", "metrics", "jobs", "other")


class SuiteCollector(Collector):
    """Queue and worker figures, read from disk at every scrape."""

    def __init__(self, queue: BaseQueue, state_dir: str) -> None:
        self.queue = queue
        self.state_dir = state_dir

    def collect(self) -> Iterator[Metric]:
        yield from self._queue_metrics()
        yield from self._worker_metrics()

    def _queue_metrics(self) -> Iterator[Metric]:
        stats = self.queue.stats()
        for state in STATES:
            gauge = GaugeMetricFamily(f"machina_queue_{state}_size", f"Jobs in queue/{state}/")
            gauge.add_metric([], stats.sizes.get(state, 0))
            yield gauge
        events = CounterMetricFamily(
            "machina_queue_events", "Queue transitions recorded in the WAL (all processes)", labels=["event"]
        )
        for name, value in sorted(stats.counters.items()):
            events.add_metric([name], value)
        yield events

    def _worker_metrics(self) -> Iterator[Metric]:
        figures = read_all(self.state_dir)
        for name, value, help_text in (
            ("machina_jobs_processed", figures.jobs_processed, "Job attempts finished by workers"),
            ("machina_jobs_ok", figures.jobs_ok, "Job attempts that succeeded"),
            ("machina_jobs_fail", figures.jobs_fail, "Job attempts that failed"),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        ok = CounterMetricFamily("machina_tool_ok", "Tool calls that succeeded", labels=["aid"])
        fail = CounterMetricFamily("machina_tool_fail", "Tool calls that failed", labels=["aid"])
        duration_ms = CounterMetricFamily(
            "machina_tool_duration_ms", "Time spent in tool calls, milliseconds", labels=["aid"]
        )
        histogram = HistogramMetricFamily(
            "machina_tool_duration_seconds", "Duration of tool calls", labels=["aid"], unit=""
        )
        for aid, tool in sorted(figures.tools.items()):
            ok.add_metric([aid], tool.ok)
            fail.add_metric([aid], tool.fail)
            duration_ms.add_metric([aid], tool.duration_ms_total)
            buckets = [(_le(bound), count) for bound, count in zip(DURATION_BUCKETS_S, tool.buckets, strict=True)]
            buckets.append(("+Inf", tool.count))
            histogram.add_metric([aid], buckets, sum_value=tool.duration_ms_total / 1000)
        yield from (ok, fail, duration_ms, histogram)


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """This daemon's registry and its own counters."""

    def __init__(self, queue: BaseQueue, state_dir: str) -> None:
        disable_created_metrics()  # the *_created series only double the page; this process has no other use
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "machina_http_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.dedup_hits = Counter(
            "machina_enqueue_dedup_hits",
            "POST /enqueue answered from the dedup table (same request_id, same body)",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "machina_auth_failures", "Requests refused by authentication, by reason", ["reason"], registry=self.registry
        )
        self.rate_limited = Counter(
            "machina_http_rate_limited", "Requests answered 429, by bucket", ["bucket"], registry=self.registry
        )
        self.registry.register(SuiteCollector(queue, state_dir))
        self._request_children: dict[tuple[str, int], Counter] = {}

    def count_request(self, endpoint: str, code: int) -> None:
        child = self._request_children.get((endpoint, code))
        if child is None:
            child = self._request_children[(endpoint, code)] = self.requests.labels(endpoint, str(code))
        child.inc()

    def render(self) -> bytes:
        """The text exposition (blocking: reads the queue and the worker files)."""
        return generate_latest(self.registry)

"""AID.PROC.SELF_METRICS.v1: the host's load and memory, and the toolhost's own resource use."""

from __future__ import annotations

import os
from typing import Any

from machina.tools.base import ToolContext


def self_metrics(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    toolhost, _ = ctx.host("host_metrics")
    return {"host": host_metrics(), "toolhost": toolhost}


def host_metrics() -> dict[str, Any]:
    """System-wide figures, read from /proc (the sandbox's /proc shows the same load and memory)."""
    with open("/proc/loadavg") as handle:
        load = [float(x) for x in handle.read().split()[:3]]
    meminfo = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree"):
                meminfo[key] = int(rest.split()[0])
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    return {
        "loadavg": load,
        "cpus": os.cpu_count(),
        "mem_total_kb": meminfo.get("MemTotal"),
        "mem_available_kb": meminfo.get("MemAvailable"),
        "swap_total_kb": meminfo.get("SwapTotal"),
        "swap_free_kb": meminfo.get("SwapFree"),
        "uptime_s": uptime,
    }

"""AID.GPU_METRICS.v1: the real nvidia-smi (or its absence) through a real toolhost, and its CSV parsed."""

from __future__ import annotations

from collections.abc import Callable

from machina import toolapi
from machina.testing.toolhost import RunningToolhost
from machina.tools.gpu_metrics import find_nvidia_smi, parse

from .conftest import needs_bwrap

Start = Callable[..., RunningToolhost]
# What nvidia-smi --query-gpu=<FIELDS> --format=csv,noheader,nounits prints on a two-GPU machine.
SAMPLE = (
    "0, NVIDIA H100 80GB HBM3, GPU-4f5e1c2a-1111-2222-3333-444455556666, 550.54.15, 81559, 1024, 80535, 37, 5,"
    " 41, 72.35, 700.00\n"
    "1, Tesla T4, GPU-aaaa, 550.54.15, 15360, 0, 15360, 0, 0, [N/A], [Not Supported], [N/A]\n"
)


def test_parse_reads_every_field_and_marks_what_a_card_does_not_report() -> None:
    first, second = parse(SAMPLE + "a line that is not a row\n")
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-4f5e1c2a-1111-2222-3333-444455556666",
        "driver_version": "550.54.15",
        "memory_total_mib": 81559.0,
        "memory_used_mib": 1024.0,
        "memory_free_mib": 80535.0,
        "utilization_gpu_pct": 37.0,
        "utilization_memory_pct": 5.0,
        "temperature_c": 41.0,
        "power_w": 72.35,
        "power_limit_w": 700.0,
    }
    assert second["name"] == "Tesla T4" and second["temperature_c"] is None and second["power_w"] is None
    assert parse("") == []


@needs_bwrap
def test_the_tool_answers_with_or_without_a_gpu(toolhost: Start) -> None:
    host = toolhost(MACHINA_PERMISSION_MODE="open")
    reply = host.client.call("AID.GPU_METRICS.v1", {})
    assert reply.status == toolapi.OK, reply
    if find_nvidia_smi() is None:
        assert reply.output["gpu"] is False and reply.output["gpus"] == []
        assert reply.output["reason"].startswith("no GPU: nvidia-smi is not installed")
    elif reply.output["gpu"]:
        assert reply.output["count"] == len(reply.output["gpus"]) >= 1
        assert all(g["memory_total_mib"] and g["name"] for g in reply.output["gpus"])
    else:
        assert reply.output["reason"].startswith(("no usable GPU", "no GPU"))
    tool = {t["aid"]: t for t in host.client.list_tools()}["AID.GPU_METRICS.v1"]
    assert (tool["tier"], tool["path"]) == (2, "probe")

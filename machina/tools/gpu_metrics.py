"""AID.GPU_METRICS.v1: what each GPU is doing now (memory, utilisation, temperature, power), from nvidia-smi.

``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` runs as the sandboxed process of a fresh
bubblewrap with the GPU device nodes bound (started by the toolhost, like AID.SHELL.EXEC.v1; no network,
no view of the working root).  Where there is no nvidia-smi, or it finds no GPU, the call still succeeds
with ``"gpu": false`` and the reason: the tool answers a question, it does not fail it.
"""

from __future__ import annotations

import shutil
from typing import Any

from machina import toolapi
from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, sandboxed_run
from machina.sandbox.launch import GPU_DEVICES, SANDBOX_PATH
from machina.tools.base import ToolFailure

# (nvidia-smi query field, our name, converter); the order is the CSV's column order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("index", "index", "int"),
    ("name", "name", "str"),
    ("uuid", "uuid", "str"),
    ("driver_version", "driver_version", "str"),
    ("memory.total", "memory_total_mib", "float"),
    ("memory.used", "memory_used_mib", "float"),
    ("memory.free", "memory_free_mib", "float"),
    ("utilization.gpu", "utilization_gpu_pct", "float"),
    ("utilization.memory", "utilization_memory_pct", "float"),
    ("temperature.gpu", "temperature_c", "float"),
    ("power.draw", "power_w", "float"),
    ("power.limit", "power_limit_w", "float"),
)
TIMEOUT_S = 15.0
OUTPUT_MAX = 64 * 1024


def find_nvidia_smi() -> str | None:
    return shutil.which("nvidia-smi", path=SANDBOX_PATH)


def gpu_metrics(policy: SandboxPolicy, rlimits: Rlimits) -> dict[str, Any]:
    exe = find_nvidia_smi()
    if exe is None:
        return {"gpu": False, "gpus": [], "reason": f"no GPU: nvidia-smi is not installed (looked on {SANDBOX_PATH})"}
    query = ",".join(field for field, _, _ in FIELDS)
    argv = [exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"]
    try:
        result = sandboxed_run(
            argv,
            policy=policy,
            timeout_s=TIMEOUT_S,
            stdout_max=OUTPUT_MAX,
            stderr_max=OUTPUT_MAX,
            devices=GPU_DEVICES,
            rlimits=rlimits,
        )
    except OSError as exc:
        raise ToolFailure(f"cannot start {exe}: {exc.strerror}", status=toolapi.SANDBOX_ERROR) from None
    if result.timed_out:
        raise ToolFailure(f"nvidia-smi gave no answer within {TIMEOUT_S:g} s", status=toolapi.TIMEOUT)
    text = result.stdout.decode("utf-8", errors="replace")
    if result.exit_code != 0:
        said = (text + result.stderr.decode("utf-8", errors="replace")).strip().splitlines()
        reason = said[0][:300] if said else f"exit status {result.exit_code}"
        return {"gpu": False, "gpus": [], "reason": f"no usable GPU: nvidia-smi: {reason}"}
    gpus = parse(text)
    if not gpus:
        return {"gpu": False, "gpus": [], "reason": "no GPU: nvidia-smi lists none"}
    return {"gpu": True, "gpus": gpus, "count": len(gpus)}


def parse(text: str) -> list[dict[str, Any]]:
    """Rows of ``--format=csv,noheader,nounits``; "[N/A]" and "[Not Supported]" become None."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(FIELDS):
            continue
        gpus.append({name: _convert(cell, kind) for (_, name, kind), cell in zip(FIELDS, cells, strict=True)})
    return gpus


def _convert(cell: str, kind: str) -> Any:
    if cell.startswith("[") or cell == "":
        return None
    try:
        if kind == "int":
            return int(cell)
        if kind == "float":
            return float(cell)
    except ValueError:
        return None
    return cell

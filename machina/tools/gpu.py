"""AID.GPU_SMOKE.v1: is a GPU usable from a tool sandbox?  A tiny computation proves it.

Runs in a fresh sandbox with the GPU device nodes bound when they exist.  Where there is no GPU (or no
cupy) the call still succeeds, with ``"gpu": false`` and the reason: it answers a question, it does not
fail it.
"""

from __future__ import annotations

import os
from typing import Any

NVIDIA_DEVICE = "/dev/nvidia0"


def gpu_smoke(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    devices = sorted(d for d in os.listdir("/dev") if d.startswith("nvidia") or d == "dri")
    if not os.path.exists(NVIDIA_DEVICE):
        return {"gpu": False, "devices": devices, "reason": f"no GPU: {NVIDIA_DEVICE} does not exist"}
    try:
        import cupy
    except ImportError:
        return {"gpu": False, "devices": devices, "reason": "a GPU device exists but cupy is not installed"}
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        values = cupy.arange(1, 1025, dtype=cupy.float64)
        total = float((values * values).sum())
    except Exception as exc:  # the driver's errors are many and all mean the same here
        return {"gpu": False, "devices": devices, "reason": f"a GPU device exists but is not usable: {exc}"}
    expected = 1024 * 1025 * 2049 / 6
    return {
        "gpu": total == expected,
        "devices": devices,
        "device_count": count,
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "check": {"sum_of_squares_1_to_1024": total, "expected": expected},
    }

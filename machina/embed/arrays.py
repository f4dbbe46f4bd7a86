"""The one array-module switch: cupy when it imports and sees a GPU, numpy otherwise.

Every vector computation in machina-embed is written once against ``xp`` (the numpy API, which cupy
mirrors); :func:`array_module` chooses the module once per process.  Code that must return plain Python or
numpy values calls :func:`to_host`.  Tests pass ``numpy`` and ``cupy`` explicitly to compare the two.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Any

import numpy

log = logging.getLogger(__name__)


def gpu_module() -> ModuleType | None:
    """cupy, when it is installed and at least one CUDA device answers; None otherwise (with the reason logged)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        log.debug("cupy unavailable (%s): vectors on the CPU with numpy", exc)
        return None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # no driver, no device
        log.info("cupy imports but no GPU answers (%s): vectors on the CPU with numpy", exc)
        return None
    if count < 1:
        return None
    return cupy


@functools.cache
def array_module() -> ModuleType:
    """``cupy`` or ``numpy``, chosen on first call and then fixed for the process."""
    module = gpu_module() or numpy
    log.debug("vector backend: %s", module.__name__)
    return module


def to_host(array: Any) -> numpy.ndarray:
    """A numpy copy of an ``xp`` array (a no-op for numpy arrays)."""
    if isinstance(array, numpy.ndarray):
        return array
    return numpy.asarray(array.get())

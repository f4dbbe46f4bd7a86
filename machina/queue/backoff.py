"""Retry delays: capped exponential backoff with "equal jitter".

Attempt ``n`` (the attempt that failed, 1-based) waits ``base = min(max_ms, min_ms * 2**(n-1))`` halved
plus a uniform random share of the other half: ``base/2 + uniform(0, base/2)``, never below ``min_ms``.
Half the delay is guaranteed (a crashing dependency gets breathing room), the other half spreads a burst
of failures so they do not come back in step.  The result is always within ``[min_ms, max_ms]``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: Doubling stops here: 2**40 ms is more than any cap we accept, and the power stays cheap.
_MAX_DOUBLINGS = 40


def retry_delay_ms(
    attempt: int, min_ms: int, max_ms: int, uniform: Callable[[float, float], float] | None = None
) -> int:
    """Delay before the attempt after ``attempt``; ``uniform`` is injectable for tests (random.uniform)."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    max_ms = max(max_ms, min_ms)
    base = min(max_ms, min_ms * (1 << min(attempt - 1, _MAX_DOUBLINGS)))
    draw = uniform or random.uniform
    delay = base / 2 + draw(0.0, base / 2)
    return int(min(max_ms, max(min_ms, delay)))

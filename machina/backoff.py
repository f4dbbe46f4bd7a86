"""The one backoff of the suite: capped exponential delays, with or without jitter.

:func:`retry_delay_ms` is the rule.  Attempt ``n`` (the attempt that failed, 1-based) waits
``base = min(max_ms, min_ms * 2**(n-1))``; with "equal jitter" that is ``base/2 + uniform(0, base/2)``,
never below ``min_ms``: half the delay is guaranteed (a crashing dependency gets breathing room), the
other half spreads a burst of failures so they do not come back in step.  The result is always within
``[min_ms, max_ms]``.

:class:`Backoff` counts the failures of one thing for its caller: job retries (the queue uses the rule
directly, the attempt number lives in the job's name), job children and tool executors that will not
start, a worker that cannot reach the toolhost or cannot record a result, and ``machina up`` restarting
a crashed child (without jitter: its delays are shown to the operator).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

#: Doubling stops here: 2**40 ms is more than any cap we accept, and the power stays cheap.
_MAX_DOUBLINGS = 40

Uniform = Callable[[float, float], float]


def retry_delay_ms(attempt: int, min_ms: int, max_ms: int, uniform: Uniform | None = None) -> int:
    """Delay before the attempt after ``attempt``; ``uniform`` is injectable for tests (random.uniform)."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    max_ms = max(max_ms, min_ms)
    base = min(max_ms, min_ms * (1 << min(attempt - 1, _MAX_DOUBLINGS)))
    draw = uniform or random.uniform
    delay = base / 2 + draw(0.0, base / 2)
    return int(min(max_ms, max(min_ms, delay)))


def no_jitter(low: float, high: float) -> float:
    """A ``uniform`` that always draws the top: the plain doubling first, 2*first, 4*first ... cap."""
    return high


class Backoff:
    """``delay()`` after each failure (seconds): first, about 2*first, 4*first ... up to ``cap``.

    ``reset()`` after a success, or ``ran_for(seconds)`` when what failed had run for ``stable_after``
    seconds, so a failure a day later is retried at once again while a failure loop is retried ever more
    slowly.  Thread-safe.
    """

    def __init__(
        self, first: float = 0.5, cap: float = 30.0, stable_after: float = 30.0, *, jitter: bool = False
    ) -> None:
        self.first = first
        self.cap = cap
        self.stable_after = stable_after
        self.uniform: Uniform = random.uniform if jitter else no_jitter
        self.failures = 0
        self._lock = threading.Lock()

    def delay(self) -> float:
        with self._lock:
            self.failures += 1
            failures = self.failures
        first_ms = max(1, round(self.first * 1000))
        return retry_delay_ms(failures, first_ms, round(self.cap * 1000), self.uniform) / 1000

    def ran_for(self, seconds: float) -> None:
        """Tell the backoff how long the thing that just failed had been running."""
        if seconds >= self.stable_after:
            self.reset()

    def reset(self) -> None:
        with self._lock:
            self.failures = 0

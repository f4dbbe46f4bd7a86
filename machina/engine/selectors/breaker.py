"""The policy's circuit breaker.

``failures`` consecutive policy failures open it; while open the policy is not started at all.  After
``cooldown_ms`` it is half-open: the next step asks the policy once more, and a success closes the breaker
while a failure opens it again for another cool-down.  The breaker lives in the engine, so it spans the
runs one worker process makes; it is not persisted (a restarted worker gives the policy a fresh chance).
"""

from __future__ import annotations

import threading

from machina.clock import SYSTEM_CLOCK, Clock

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_ms: int, clock: Clock = SYSTEM_CLOCK) -> None:
        if failures < 1:
            raise ValueError("failures must be >= 1")
        self.threshold = failures
        self.cooldown_s = cooldown_ms / 1000
        self.clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock.monotonic() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """Whether the policy may be asked now."""
        with self._lock:
            return self._state() != OPEN

    def record_success(self) -> str | None:
        """Note a success; returns the new state when it changed (``closed``)."""
        with self._lock:
            changed = self._opened_at is not None
            self.failures = 0
            self._opened_at = None
            return CLOSED if changed else None

    def record_failure(self) -> str | None:
        """Note a failure; returns ``open`` when this failure opened (or re-opened) the breaker."""
        with self._lock:
            self.failures += 1
            if self._opened_at is not None or self.failures >= self.threshold:
                self._opened_at = self.clock.monotonic()
                return OPEN
            return None

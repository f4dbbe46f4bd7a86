"""Restart delays: capped exponential backoff, forgiven once a child has stayed up for a while."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """``delay()`` after each crash: first, 2*first, 4*first ... up to ``cap`` seconds.

    ``reset()`` when a child has run for ``stable_after`` seconds, so a crash a day later restarts at once
    again, while a child that crashes in a loop is retried ever more slowly (never hammering the machine).
    """

    first: float = 0.5
    cap: float = 30.0
    stable_after: float = 30.0
    failures: int = 0

    def delay(self) -> float:
        delay = min(self.cap, self.first * (2**self.failures))
        self.failures += 1
        return delay

    def ran_for(self, seconds: float) -> None:
        """Tell the backoff how long the child that just exited had been running."""
        if seconds >= self.stable_after:
            self.reset()

    def reset(self) -> None:
        self.failures = 0

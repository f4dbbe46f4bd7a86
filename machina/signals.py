"""Capture SIGTERM/SIGINT as an event for a clean shutdown, and restore the old handlers afterwards."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignal:
    """``with ShutdownSignal() as stop: while not stop.is_set(): ...``

    The first signal sets the event; a second SIGINT while shutting down raises KeyboardInterrupt so an
    operator can always get out of a stuck stop with a second Ctrl-C.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> None:
        self.signals = signals
        self.event = threading.Event()
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> threading.Event:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self.event

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)
        self.event.set()

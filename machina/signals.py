"""Capture SIGTERM/SIGINT as an event for a clean shutdown, and restore the old handlers afterwards.

A Python signal handler runs in the main thread between two of its bytecodes, possibly while that thread
holds a lock: inside ``Event.wait`` (which the services' ``stop.wait(0.25)`` loops sit in), the event's
own.  ``Event.set`` takes that lock, so a handler calling it could wait forever on its own thread: a
daemon told to stop right after it started hung until SIGKILL (once in 200 rounds of
``bench/bench_restart_soak.py``).  So the handler only writes a byte to a pipe, which takes no lock, and a
relay thread sets the event.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignal:
    """``with ShutdownSignal() as stop: while not stop.is_set(): ...``

    The first signal sets the event (from the relay thread, an instant later); a second SIGINT while
    shutting down raises KeyboardInterrupt so an operator can always get out of a stuck stop with a second
    Ctrl-C.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> None:
        self.signals = signals
        self.event = threading.Event()
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._read_fd = self._write_fd = -1
        self._relay: threading.Thread | None = None

    def __enter__(self) -> threading.Event:
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write_fd, False)  # the handler never blocks: one byte waiting is enough
        self._relay = threading.Thread(target=self._relay_signals, name="signal-relay", daemon=True)
        self._relay.start()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self.event

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        write_fd, self._write_fd = self._write_fd, -1
        os.close(write_fd)  # the relay reads the end of the pipe and returns
        if self._relay is not None:
            self._relay.join(5)
        os.close(self._read_fd)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)
        with contextlib.suppress(OSError):  # full (a byte already waits) or closed (we are leaving)
            os.write(self._write_fd, b"\0")

    def _relay_signals(self) -> None:
        while os.read(self._read_fd, 64):
            self.event.set()

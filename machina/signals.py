"""Signals handled outside the signal handler: SIGTERM/SIGINT as a stop event, SIGHUP as a reload.

A Python signal handler runs in the main thread between two of its bytecodes, possibly while that thread
holds a lock: inside ``Event.wait`` (which the services' ``stop.wait(0.25)`` loops sit in) the event's
own, inside ``Thread.start`` (a server accepting a connection) the threading module's.  A handler taking
the same lock waits for ever on its own thread: a daemon told to stop right after it started hung until
SIGKILL (once in 200 rounds of ``bench/bench_restart_soak.py``).  So a handler here only writes the
signal's number to a pipe, which takes no lock, and a relay thread does the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRelay:
    """``with SignalRelay((signal.SIGHUP,), reload, "sighup-reload"):`` runs ``deliver(signum)`` on a thread
    of its own for each signal received (one at a time, in order; signals arriving during a delivery are
    delivered after it).  Install it from the main thread; the old handlers come back on exit."""

    def __init__(self, signals: tuple[signal.Signals, ...], deliver: Callable[[int], None], name: str) -> None:
        self.signals = signals
        self.deliver = deliver
        self.name = name
        self._previous: dict[signal.Signals, object] = {}
        self._read_fd = self._write_fd = -1
        self._relay: threading.Thread | None = None

    def __enter__(self) -> SignalRelay:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the relay thread and install the handlers (from the main thread)."""
        self._read_fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._write_fd, False)  # the handler never blocks (a full pipe drops the byte)
        self._relay = threading.Thread(target=self._relay_signals, name=self.name, daemon=True)
        self._relay.start()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def stop(self) -> None:
        """Put the previous handlers back and end the relay thread (after a delivery under way)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        write_fd, self._write_fd = self._write_fd, -1
        os.close(write_fd)  # the relay reads the end of the pipe and returns
        relay = self._relay
        if relay is not None and relay is not threading.current_thread():
            relay.join(5)
        if relay is not None and relay.is_alive():  # still delivering: its descriptor must not be reused
            log.warning("%s: still handling a signal; leaving it", self.name)
            return
        os.close(self._read_fd)

    def on_signal(self, signum: int) -> None:
        """Runs in the handler itself, before the relay: only what takes no lock (subclasses)."""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.on_signal(signum)
        with contextlib.suppress(OSError):  # full (the relay is behind) or closed (we are leaving)
            os.write(self._write_fd, bytes((signum,)))

    def _relay_signals(self) -> None:
        while data := os.read(self._read_fd, 64):
            for signum in data:
                try:
                    self.deliver(signum)
                except Exception:  # the next signal must still be relayed
                    log.exception("handling %s failed", signal.Signals(signum).name)


class ShutdownSignal(SignalRelay):
    """``with ShutdownSignal() as stop: while not stop.is_set(): ...``

    The first signal sets the event (from the relay thread, an instant later); a second SIGINT while
    shutting down raises KeyboardInterrupt so an operator can always get out of a stuck stop with a second
    Ctrl-C.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> None:
        super().__init__(signals, self._set, "signal-relay")
        self.event = threading.Event()
        self.received: signal.Signals | None = None

    def __enter__(self) -> threading.Event:  # type: ignore[override]
        self.start()
        return self.event

    def on_signal(self, signum: int) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum)

    def _set(self, signum: int) -> None:
        self.event.set()

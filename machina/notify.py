"""sd_notify for Type=notify services: READY=1, STATUS=, STOPPING=1 and watchdog pings.

Built on the ``sdnotify`` library.  Without ``NOTIFY_SOCKET`` (a plain process, ``machina up``) every call
is a no-op.  The watchdog pings at half of ``WATCHDOG_USEC`` (as sd_watchdog_enabled(3) advises) and only
while the service's health check passes, so a hung main loop stops the pings and systemd restarts it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket_path = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = _watchdog_usec(env)
        self._notifier: sdnotify.SystemdNotifier | None = None
        if self._socket_path:
            # sdnotify reads NOTIFY_SOCKET itself; set it for the case where an explicit environ was passed.
            previous = os.environ.get("NOTIFY_SOCKET")
            os.environ["NOTIFY_SOCKET"] = self._socket_path
            try:
                self._notifier = sdnotify.SystemdNotifier()
            finally:
                if previous is None:
                    del os.environ["NOTIFY_SOCKET"]
                else:
                    os.environ["NOTIFY_SOCKET"] = previous
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the watchdog timeout), or None when systemd set no watchdog."""
        return self._watchdog_usec / 2_000_000 if self._watchdog_usec else None

    def send(self, *assignments: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(assignments))

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> None:
        self.stop_watchdog()
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def start_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping WATCHDOG=1 every interval while ``healthy()`` returns True."""
        interval = self.watchdog_interval
        if not self.enabled or interval is None or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watchdog_loop, args=(healthy, interval), name="sd-watchdog", daemon=True
        )
        self._thread.start()

    def stop_watchdog(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        """Stop the watchdog and close the notify socket; later messages are dropped (idempotent)."""
        self.stop_watchdog()
        notifier, self._notifier = self._notifier, None
        sock = getattr(notifier, "socket", None)  # sdnotify keeps its connected datagram socket here
        if sock is not None:
            sock.close()

    def _watchdog_loop(self, healthy: Callable[[], bool], interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                ok = healthy()
            except Exception:
                log.exception("health check raised; withholding watchdog ping")
                ok = False
            if ok:
                self.send("WATCHDOG=1")
            else:
                log.warning("health check failed; withholding watchdog ping")


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec if usec > 0 else None

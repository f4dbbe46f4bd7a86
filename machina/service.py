"""The lifecycle every long-running Machina service shares (uvicorn style: startup, serve, shutdown).

A service binds and opens what it needs in ``start`` (and fails there, before READY=1), runs until the
shutdown event is set in ``serve``, and releases everything in ``close``, which also runs after a failed
``start`` (so ``close`` must cope with a half-started service): a stop leaves nothing behind.
``run_service`` wires that to signals and sd_notify so each executable's ``main`` stays thin.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from machina.exitcodes import ExitCode
from machina.notify import Notifier
from machina.owned import creating
from machina.signals import ShutdownSignal

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str

    def start(self) -> None:
        """Bind sockets, open state; raise MachinaError to refuse to start."""

    def serve(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then finish work in flight."""

    def healthy(self) -> bool:
        """True while the main loop makes progress (gates the watchdog ping)."""

    def status(self) -> str:
        """One line for systemctl status."""

    def close(self) -> None: ...


def run_service(service: Service, notifier: Notifier | None = None) -> ExitCode:
    notifier = notifier or Notifier()
    with ShutdownSignal() as stop:
        try:
            with creating():  # a read-only or full place at start: one line naming it, exit 73
                service.start()
        except BaseException:
            _close_after_failed_start(service)
            raise
        try:
            notifier.ready(service.status())
            notifier.start_watchdog(service.healthy)
            log.info("%s ready: %s", service.name, service.status())
            service.serve(stop)
            notifier.stopping("shutting down")
            log.info("%s stopping", service.name)
        finally:
            notifier.stop_watchdog()
            service.close()
    return ExitCode.OK


def _close_after_failed_start(service: Service) -> None:
    """Release what a half-done start made (sockets, scratch); the start's own error is what gets reported."""
    try:
        service.close()
    except Exception as exc:  # the first error is the one reported; this one is only logged
        log.warning("%s: cleaning up after a failed start: %s", service.name, exc)

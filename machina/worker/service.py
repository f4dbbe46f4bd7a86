"""machina-worker's lifecycle: open the queue and take over the worker id, start the job children, say
READY, run the job slots until SIGTERM, then stop claiming, let running jobs finish within the grace
period (or give them back), say STOPPING and exit 0.

It does not use :func:`machina.service.run_service`, whose READY follows ``start()`` at once: a worker is
ready only once its children are, and waiting for them (which backs off when they cannot start) must be
cut short by SIGTERM.  The parts are the same: :class:`~machina.signals.ShutdownSignal` and
:class:`~machina.notify.Notifier`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from machina.config import Config
from machina.engine import Catalog
from machina.exitcodes import ExitCode, MachinaError
from machina.manifests.schemacheck import checked_digests
from machina.manifests.tools import ManifestError
from machina.metrics.figures import FiguresWriter, metrics_dir
from machina.notify import Notifier
from machina.owned import sweep_temps
from machina.queue import BaseQueue, open_queue
from machina.root import Root, open_root
from machina.signals import ShutdownSignal
from machina.worker import orphans, protocol
from machina.worker.children import JobChild
from machina.worker.pool import ChildPool
from machina.worker.settings import TICK_S, WorkerSettings
from machina.worker.slot import JobSlot, WorkerContext

logger = logging.getLogger(__name__)

#: A slot that has not looked up for this long (blocked in a file-system call, say) withholds the
#: watchdog ping; systemd restarts the worker if that lasts for WatchdogSec.
STALE_AFTER_S = 10.0
#: How often STATUS= is refreshed while running.
STATUS_EVERY_S = 10.0


class WorkerService:
    name = "machina-worker"

    def __init__(
        self,
        cfg: Config,
        worker_id: str,
        *,
        notifier: Notifier | None = None,
        child_command: Sequence[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.worker_id = worker_id
        self.settings = WorkerSettings.from_config(cfg)
        self.notifier = notifier or Notifier()
        self.child_command = child_command
        self.queue: BaseQueue | None = None
        self.pool: ChildPool | None = None
        self.figures: FiguresWriter | None = None
        self.slots: list[JobSlot] = []
        self._tick = time.monotonic()

    def run(self) -> ExitCode:
        with ShutdownSignal() as stop:
            try:
                ctx = self._open(stop)
                self.notifier.start_watchdog(self.healthy)
                if ctx.pool.wait_ready(self.settings.concurrency, stop, self._touch):
                    self.notifier.ready(self.status())
                    logger.info("ready: %s", self.status())
                    self._serve(ctx)
                self.notifier.stopping("stopping")
                self._stop_slots(ctx)
            finally:
                self.notifier.stop_watchdog()
                self._close()
        if self.pool is not None and self.pool.fatal is not None:
            raise self.pool.fatal
        if any(slot.failed for slot in self.slots):
            raise MachinaError(
                "a job slot failed (see the log above); its job is recovered at restart", ExitCode.SOFTWARE
            )
        logger.info("stopped")
        return ExitCode.OK

    # --- start -----------------------------------------------------------------------------------------

    def _open(self, stop: threading.Event) -> WorkerContext:
        root = open_root(self.cfg)
        _check_catalog(root)
        self.queue = open_queue(self.cfg)
        recovered = self.queue.recover(self.worker_id)
        if recovered:
            logger.warning("took over id %s: %d job(s) it held are back in the queue", self.worker_id, len(recovered))
        self.figures = FiguresWriter(root.state, self.worker_id)
        sweep_temps(metrics_dir(root.state))  # figures a SIGKILLed predecessor was writing
        orphans.become_subreaper()
        init = {
            "op": protocol.INIT,
            "worker_id": self.worker_id,
            "config": protocol.child_config(self.cfg, root.runtime_dir),
            "schemas_checked": checked_digests(),  # by _check_catalog above: the child skips them
        }
        command = self.child_command
        self.pool = ChildPool(lambda: JobChild.spawn(init, command), self.settings.pool_size, self.notifier.status)
        self.pool.start()
        return WorkerContext(
            worker_id=self.worker_id,
            queue=self.queue,
            pool=self.pool,
            figures=self.figures,
            settings=self.settings,
            logs_dir=root.logs,
            stop=stop,
        )

    # --- running ---------------------------------------------------------------------------------------

    def _serve(self, ctx: WorkerContext) -> None:
        self.slots = [JobSlot(i + 1, ctx) for i in range(self.settings.concurrency)]
        for slot in self.slots:
            slot.start()
        shown, shown_at = "", 0.0
        while not ctx.stop.wait(TICK_S):
            self._touch()
            if any(slot.failed for slot in self.slots) or ctx.pool.fatal is not None:
                ctx.stop.set()
                break
            if time.monotonic() - shown_at >= STATUS_EVERY_S and (text := self.status()) != shown:
                self.notifier.status(text)
                shown, shown_at = text, time.monotonic()

    def _stop_slots(self, ctx: WorkerContext) -> None:
        ctx.stop.set()
        ctx.grace_deadline = time.monotonic() + self.settings.stop_grace_ms / 1000
        running = [slot.job for slot in self.slots if slot.job]
        if running:
            logger.info(
                "stopping: waiting up to %.1f s for %d running job(s)", self.settings.stop_grace_ms / 1000, len(running)
            )
        for slot in self.slots:
            while slot.is_alive():
                slot.join(TICK_S)
                self._touch()

    def _touch(self) -> None:
        self._tick = time.monotonic()

    def healthy(self) -> bool:
        """The watchdog's question: is every loop of this worker still going round?"""
        now = time.monotonic()
        if self.pool is not None and self.pool.fatal is not None:
            return False
        if now - self._tick > STALE_AFTER_S:
            return False
        return all(slot.is_alive() and now - slot.last_tick <= STALE_AFTER_S for slot in self.slots)

    def status(self) -> str:
        if self.pool is None:
            return "starting"
        ready, lent = self.pool.counts()
        if self.pool.problem:
            idle = "" if ready + lent else "claiming nothing: "
            return f"worker {self.worker_id}: {idle}cannot start a job child: {self.pool.problem}"
        busy = sum(1 for slot in self.slots if slot.job)
        figures = self.figures.figures if self.figures else None
        done = f"; {figures.jobs_ok} ok, {figures.jobs_fail} failed in all" if figures else ""
        return f"worker {self.worker_id}: {busy}/{self.settings.concurrency} slots busy, {ready + lent} children{done}"

    # --- shutdown --------------------------------------------------------------------------------------

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.figures is not None:
            self.figures.flush()
        if self.queue is not None:
            self.queue.close()


def _check_catalog(root: Root) -> None:
    """Refuse to start with goal or tool manifests that have problems (the children would refuse too)."""
    try:
        Catalog.load(root)
    except ManifestError as exc:
        raise MachinaError(f"tool or goal manifests have problems (machina cts): {exc}", ExitCode.CONFIG) from None

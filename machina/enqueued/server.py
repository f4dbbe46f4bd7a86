"""The machina-enqueued service: start, serve, stop (the :class:`machina.service.Service` lifecycle).

``start`` opens the queue (replaying its WAL), binds the listening sockets and starts uvicorn on a uvloop
event loop in its own thread; it returns once uvicorn accepts connections, so READY=1 (sent by
:func:`machina.service.run_service` right after) means "accepting".  The main thread keeps the signal
handlers: on SIGTERM ``serve`` tells uvicorn to stop, and uvicorn stops accepting, closes idle keep-alive
connections and lets requests in flight finish (up to MACHINA_API_SHUTDOWN_TIMEOUT_MS).  ``close`` then
drains the queue's thread pool (every job being written is finished and acknowledged or never
acknowledged), saves the nonce table, and closes the queue (WAL flushed).

The watchdog ping is withheld when the event loop stops ticking (its heartbeat is older than
:data:`HEARTBEAT_STALE_S`) or the HTTP thread died.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import uvicorn
import uvloop

from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import Config
from machina.enqueued.app import EnqueueApp
from machina.enqueued.auth import Authenticator
from machina.enqueued.batching import JobWriter
from machina.enqueued.listen import BACKLOG, Listeners, open_listeners
from machina.enqueued.metrics import Metrics
from machina.enqueued.nonces import NonceStore
from machina.enqueued.protocol import ConnectionLimits, guarded_protocol
from machina.enqueued.ratelimit import RateLimiter
from machina.enqueued.settings import ServerSettings
from machina.exitcodes import ExitCode, MachinaError
from machina.owned import sweep_temps
from machina.queue import BaseQueue, open_queue
from machina.root import open_root

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
HEARTBEAT_STALE_S = 10.0
STARTUP_TIMEOUT_S = 30.0


class EnqueueService:
    name = "machina-enqueued"

    def __init__(self, cfg: Config, settings: ServerSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cfg = cfg
        self.settings = settings
        self.clock = clock
        self.root = open_root(cfg)
        self.queue: BaseQueue | None = None
        self.listeners: Listeners | None = None
        self.nonces = NonceStore(settings.hmac_ttl_s, clock)
        self.executor: ThreadPoolExecutor | None = None
        self.writer: JobWriter | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._heartbeat = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        s = self.settings
        self._log_auth_mode()
        self.queue = open_queue(self.cfg, self.clock)
        self.queue.start_maintenance()
        sweep_temps(self.root.state)  # a nonce table a SIGKILLed predecessor was writing
        self.nonces.load(self.root.state)
        self.executor = ThreadPoolExecutor(max_workers=s.threads, thread_name_prefix="enqueue")
        if self.queue.commits_batches:
            self.writer = JobWriter(self.queue, alone=self._one_connection)
        else:  # one job at a time, as many at once as the pool allows (PostgreSQL: one transaction each)
            self.writer = JobWriter(self.queue, committers=s.threads, max_batch=1)
        self.writer.start()
        app = EnqueueApp(
            queue=self.queue,
            state_dir=self.root.state,
            auth=Authenticator(s.token, s.hmac_secret, s.hmac_ttl_s, self.clock, self.nonces),
            limiter=RateLimiter(s.rpm, self.clock),
            enqueue_limiter=RateLimiter(s.enqueue_rpm, self.clock),
            metrics=Metrics(self.queue, self.root.state),
            executor=self.executor,
            writer=self.writer,
            max_body_bytes=s.max_body_bytes,
            metrics_public=s.metrics_public,
        )
        self.listeners = open_listeners(s.host, s.port, s.socket_path)
        config = uvicorn.Config(
            app,
            http=guarded_protocol(ConnectionLimits(s.header_timeout_s, s.body_timeout_s, s.max_header_bytes)),
            interface="asgi3",
            lifespan="off",
            ws="none",
            loop="none",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,  # rate limits key on the real peer, never on a forgeable header
            timeout_keep_alive=s.keepalive_timeout_s,  # type: ignore[arg-type]  # a float works (call_later)
            limit_concurrency=s.max_connections,
            backlog=BACKLOG,
            timeout_graceful_shutdown=s.shutdown_timeout_s,  # type: ignore[arg-type]
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run_http, name="http", daemon=True)
        self._thread.start()
        self._wait_started()

    def _one_connection(self) -> bool:
        """On the HTTP thread: whether a single connection is open (the writer's inline path)."""
        server = self._server
        return server is not None and len(server.server_state.connections) <= 1

    def _wait_started(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise MachinaError(f"HTTP server failed to start: {self._thread_error}", ExitCode.SOFTWARE)
            if time.monotonic() > deadline:
                raise MachinaError("HTTP server did not start within 30 s", ExitCode.SOFTWARE)
            time.sleep(0.01)

    def serve(self, stop: threading.Event) -> None:
        assert self._server is not None and self._thread is not None
        log.info("listening on %s", self.status())
        while not stop.wait(0.25):
            if not self._thread.is_alive():
                raise MachinaError(f"HTTP server stopped unexpectedly: {self._thread_error}", ExitCode.SOFTWARE)
        log.info("stopping: no new connections; finishing requests in flight")
        self._stop_http()

    def healthy(self) -> bool:
        alive = self._thread is not None and self._thread.is_alive()
        return alive and time.monotonic() - self._heartbeat < HEARTBEAT_STALE_S

    def status(self) -> str:
        where = ", ".join(self.listeners.addresses) if self.listeners else "nowhere yet"
        return where + (" (socket-activated)" if self.listeners and self.listeners.activated else "")

    def close(self) -> None:
        http_stopped = self._stop_http()
        if self.writer is not None:
            self.writer.close()  # every job submitted is written (and answered, if its client still waits)
            self.writer = None
        if self.executor is not None:
            self.executor.shutdown(wait=True)  # every job being written is finished before the queue closes
            self.executor = None
        if http_stopped and self.queue is not None:
            try:
                self.nonces.save(self.root.state)
            except OSError as exc:
                log.warning("could not save the nonce table (%s): the next start refuses older signatures", exc)
        if self.queue is not None:
            self.queue.close()
            self.queue = None
        if self.listeners is not None:
            self.listeners.close()

    # --- the HTTP thread -------------------------------------------------------------------------------

    def _run_http(self) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._serve_http())
        except BaseException as exc:  # SystemExit included: uvicorn exits on some startup failures
            self._thread_error = exc
            log.error("HTTP server failed: %s", exc, exc_info=not isinstance(exc, SystemExit))

    async def _serve_http(self) -> None:
        assert self._server is not None and self.listeners is not None
        beat = asyncio.create_task(self._beat())
        try:
            await self._server.serve(sockets=self.listeners.sockets)  # no signal capture off the main thread
        finally:
            beat.cancel()

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    def _stop_http(self) -> bool:
        """Ask uvicorn to shut down gracefully and wait for it; False if it is still running."""
        if self._server is None or self._thread is None:
            return True
        self._server.should_exit = True
        self._thread.join(timeout=self.settings.shutdown_timeout_s + 5)
        if self._thread.is_alive():
            log.error("HTTP server did not stop within the shutdown timeout; forcing")
            self._server.force_exit = True
            self._thread.join(timeout=5)
        return not self._thread.is_alive()

    def _log_auth_mode(self) -> None:
        s = self.settings
        named = (("token (Authorization header)", s.token), ("HMAC signature", s.hmac_secret))
        modes = [name for name, value in named if value]
        if not modes:
            log.warning("no MACHINA_API_TOKEN or MACHINA_API_HMAC_SECRET: every endpoint but /health answers 403")
        else:
            log.info("auth: %s required", " and ".join(modes))
        for name in s.weak_secrets():
            log.warning("%s is shorter than 16 characters: easy to guess", name)

"""Connections of the PostgreSQL queue: a small pool for transactions, one session connection holding the
worker ids' advisory locks, and a listener thread waking idle claims on ``NOTIFY``.

The password is never in the URL (``MACHINA_QUEUE_URL`` refuses one); it reaches libpq as a keyword
argument, and :func:`scrub` removes it from any error text before it is raised or logged.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from machina.config.kinds import redact_url
from machina.queue.errors import QueueUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The NOTIFY channel every state change that makes a job claimable signals.
CHANNEL = "machina_queue"
#: Seconds libpq waits for a connection to be made; pool callers wait at most POOL_WAIT_S for one.
CONNECT_TIMEOUT_S = 10
POOL_WAIT_S = 10.0
#: The listener's back-off while the database is away (seconds).
LISTEN_RETRY_S = 1.0


class Connector:
    """How to reach the database: the URL, the secret password, and session options."""

    def __init__(self, url: str, password: str | None, *, fsync: bool, application: str) -> None:
        self.url = url
        self._password = password
        # synchronous_commit follows MACHINA_WAL_FSYNC: on, a commit returns once its WAL is flushed.  Added
        # to the URL's own options (a search_path, say), which a keyword argument would replace.
        given = conninfo_to_dict(url)
        options = f"{given.get('options') or ''} -c synchronous_commit={'on' if fsync else 'off'}".strip()
        self.kwargs: dict[str, Any] = {
            "connect_timeout": given.get("connect_timeout") or CONNECT_TIMEOUT_S,
            "application_name": given.get("application_name") or application,
            "options": options,
        }
        if password:
            self.kwargs["password"] = password

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=autocommit, **self.kwargs)
        except psycopg.Error as exc:
            raise QueueUnavailable(f"connect to {redact_url(self.url)}", self.scrub(exc)) from None

    def scrub(self, error: BaseException | str) -> str:
        """Error text without the password (libpq may quote connection parameters)."""
        text = " ".join(str(error).split())
        if self._password:
            text = text.replace(self._password, "***")
        return redact_url(text)


class Pool:
    """The transaction pool: ``run(what, fn)`` runs ``fn(conn)`` in one transaction.

    A connection problem before the commit (a restarted server leaves dead connections in the pool) is
    retried on another connection; one during the commit is not (its outcome is unknown) and, like every
    connection failure, is raised as QueueUnavailable.
    """

    def __init__(self, connector: Connector, size: int) -> None:
        self.connector = connector
        self.size = size
        self._pool: ConnectionPool[Any] = ConnectionPool(
            connector.url,
            kwargs={**connector.kwargs, "autocommit": True},
            min_size=1,
            max_size=size,
            timeout=POOL_WAIT_S,
            open=True,
            name="machina-queue",
        )

    def run(self, what: str, fn: Callable[[psycopg.Connection[Any]], T], *, transaction: bool = True) -> T:
        """``transaction=False``: ``fn`` runs one statement (atomic by itself, in autocommit), one round
        trip fewer each side; a connection problem during it leaves its outcome as unknown as a commit's."""
        tries = self.size + 1
        for attempt in range(1, tries + 1):
            committing = not transaction
            try:
                with self._pool.connection() as conn:
                    if not transaction:
                        return fn(conn)
                    with conn.transaction():
                        result = fn(conn)
                        committing = True
                return result
            except PoolTimeout as exc:  # no connection within POOL_WAIT_S: the server is away (or all busy)
                raise QueueUnavailable(what, self.connector.scrub(exc)) from None
            except psycopg.OperationalError as exc:
                self._discard_dead()
                if committing or attempt == tries:
                    outcome = " (during the commit: it may or may not have happened)" if committing else ""
                    raise QueueUnavailable(what, self.connector.scrub(exc) + outcome) from None
                log.debug("queue database: %s failed (%s); trying another connection", what, exc)
        raise AssertionError("unreachable")

    def _discard_dead(self) -> None:
        """After a restart of the server every idle connection is dead: test them now (and replace the
        dead ones), so that the next callers do not each meet one."""
        try:
            self._pool.check()
        except psycopg.Error as exc:
            log.debug("queue database: checking the pool failed: %s", self.connector.scrub(exc))

    def close(self) -> None:
        self._pool.close()


class Session:
    """One autocommit connection whose lifetime is this process's hold on its worker ids (session-level
    advisory locks die with it).  Reconnected on demand; callers hold :attr:`lock`."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> tuple[psycopg.Connection[Any], bool]:
        """The live connection, and whether it is new (so the caller re-takes its locks)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn, False
        self.drop()
        self._conn = self.connector.connect()
        return self._conn, True

    @contextlib.contextmanager
    def using(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        conn, _ = self.connection()
        try:
            yield conn
        except psycopg.OperationalError as exc:
            self.drop()
            raise QueueUnavailable(what, self.connector.scrub(exc)) from None

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class Listener:
    """A thread LISTENing on :data:`CHANNEL`: each notification bumps :attr:`generation` and wakes waiters.
    Polling by the waiters (MACHINA_SERVE_SCAN_MS) covers the time the database is away."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self.changed = threading.Condition()
        self.generation = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="machina-queue-listen", daemon=True)
                self._thread.start()

    def wait(self, generation: int, timeout: float) -> None:
        """Wait up to ``timeout`` seconds unless something changed since ``generation`` was read."""
        with self.changed:
            if self.generation == generation:
                self.changed.wait(timeout)

    def bump(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.connector.connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.bump()  # anything that happened while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.bump()
            except (psycopg.Error, QueueUnavailable) as exc:
                if self._stop.is_set():
                    return
                log.warning(
                    "queue listener lost the database (%s); polling until it is back", self.connector.scrub(exc)
                )
                self._stop.wait(LISTEN_RETRY_S)

    def close(self) -> None:
        self._stop.set()
        self.bump()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

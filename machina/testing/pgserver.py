"""A real, throw-away PostgreSQL server for tests and benchmarks: ``initdb`` into a fresh temporary
directory, ``pg_ctl start`` with a Unix socket in that directory and no TCP port, ``stop`` removes it all.

PostgreSQL refuses to run as root: run as root, the server runs as the ``postgres`` system user (Debian's
package creates it), else ``nobody``, through ``setpriv``.  :func:`find_binaries` says where ``initdb``,
``pg_ctl`` and ``postgres`` are, or None (tests then skip, saying so; ``.ci/run`` installs them)::

    with PgServer() as server:
        url = server.create_database("t1")    # postgresql:///t1?host=/tmp/machina-pg-.../&user=machina
        ...
        server.kill()                          # kill -9 the postmaster (a crash)
        server.start()                         # crash recovery, as after a power cut of the process
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Any

from machina.proctree import child_pids

#: The database superuser initdb creates (trust authentication on the private socket only).
SUPERUSER = "machina"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_S = 60.0


def find_binaries() -> str | None:
    """The directory holding initdb, pg_ctl and postgres (the newest Debian version first, then PATH)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(os.path.dirname(os.path.realpath(which)))
    for directory in candidates:
        if all(os.access(os.path.join(directory, p), os.X_OK) for p in PROGRAMS):
            return directory
    return None


def _version_key(path: str) -> float:
    try:
        return float(path.split("/")[-2])
    except ValueError:
        return 0.0


def missing_reason() -> str:
    return (
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin or on "
        "PATH: install Debian's postgresql package (make deps / .ci/run do)"
    )


class PgServer:
    """One PostgreSQL cluster in a temporary directory; ``fsync`` off by default (tests survive a killed
    server either way: committed WAL is in the kernel's page cache, not lost with the process)."""

    def __init__(
        self, *, fsync: bool = False, max_connections: int = 200, bindir: str | None = None, parent: str | None = None
    ) -> None:
        found = bindir or find_binaries()
        if found is None:
            raise FileNotFoundError(missing_reason())
        self.bindir = found
        self.fsync = fsync
        self.max_connections = max_connections
        self.dir = tempfile.mkdtemp(prefix="machina-pg-", dir=parent)  # parent: where a benchmark measures
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self._user = _unprivileged_user() if os.geteuid() == 0 else None
        self.started = False

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> PgServer:
        try:
            self.init()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def init(self) -> None:
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "on" if self.fsync else "off",
            "max_connections": str(self.max_connections),
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("\n# machina.testing.pgserver\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start (again); after a kill -9 the orphaned backends must go first, which takes a moment."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            result = self._run(
                "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", str(int(START_TIMEOUT_S)), "start", check=False
            )
            if result.returncode == 0:
                self.started = True
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()} {self._log_tail()}")
            time.sleep(0.2)

    def kill(self) -> int:
        """kill -9 the server as a machine crash would: the postmaster and every backend at once (a backend
        left alive could still commit on a connection it holds); returns the postmaster's pid."""
        pid = self.postmaster_pid()
        if pid is None:
            raise RuntimeError("PostgreSQL is not running")
        backends = child_pids(pid)
        os.kill(pid, signal.SIGKILL)
        for child in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.started = False
        return pid

    def stop(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        if os.path.isdir(self.data) and self.postmaster_pid() is not None:
            result = self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
            pid = self.postmaster_pid()
            if result.returncode != 0 and pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def postmaster_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as handle:
                pid = int(handle.readline().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    # --- databases -------------------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.dir}&user={SUPERUSER}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, database: str, name: str) -> str:
        """A new, empty schema in ``database`` (created when missing); returns a URL whose search_path is
        that schema alone.  Far cheaper than a database per test: nothing is copied."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{database}"')
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(database)}&options=-csearch_path%3D{name}"

    def execute(self, database: str, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (for checks a test makes behind the queue's back)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(statement)
            return list(cur.fetchall()) if cur.description else []

    # --- plumbing --------------------------------------------------------------------------------------

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [os.path.join(self.bindir, program), *args]
        if self._user is not None:
            user = self._user
            argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--", *argv]
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": self.dir, "TZ": "UTC"}
        result = subprocess.run(argv, env=env, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()} {self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        try:
            with open(self.log) as handle:
                return "server log: " + " | ".join(handle.read().splitlines()[-5:])
        except OSError:
            return ""


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")

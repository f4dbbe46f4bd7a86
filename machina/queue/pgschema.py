"""The PostgreSQL queue's schema, as numbered migrations applied once each (``machina queue migrate``).

``machina_schema_version`` lists the versions applied.  :func:`migrate` applies the missing ones in order,
each in its own transaction, under a transaction-level advisory lock so that hosts starting at once do not
race; it is idempotent.  A database whose version is newer than this code knows is refused: the host
runs an older machina than the database was migrated for.

Tables (names prefixed ``machina_`` so the queue can share a database):

- ``machina_jobs``: one row per job, keyed by its name (the attempt-1 file name of the file queue, whose
  order is the claim order).  ``state`` is one of :data:`machina.queue.base.STATES`; ``body`` the
  canonical request bytes as text (never rewritten except by ``approve``, which carries leases);
  ``owner_id``/``claimed_ms`` while processing; ``due_ms`` while waiting for a retry; ``state_ms`` when it
  entered its state (what ``purge`` compares).
- ``machina_results``: each attempt's result envelope (JSON text), deleted with the job.
- ``machina_dedup``: ``request_id -> (name, SHA-256 of the canonical body, ms)``.
- ``machina_workers``: a worker id's row; its ``lock_key`` is the session advisory lock a live holder
  keeps, so a dead holder (its connection gone) is told from a live one by ``pg_locks``.
- ``machina_counters``: transition counters, one row per (process instance, counter) so that concurrent
  processes never wait on one hot row; ``stats`` sums them.
"""

from __future__ import annotations

from typing import Any

from machina.queue.errors import QueueError

#: The advisory lock class (first int4 key) the queue uses: worker ids and migrations.
LOCK_CLASS = 0x6D61  # "ma"
MIGRATION_LOCK = 1

#: (version, statements) in order; never edit a released entry, append a new one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE machina_jobs (
                name text PRIMARY KEY,
                state text NOT NULL CHECK (state IN ('inbox','processing','retry','asked','done','failed','dlq')),
                attempt integer NOT NULL CHECK (attempt >= 1),
                priority integer NOT NULL,
                enqueued_ms bigint NOT NULL,
                state_ms bigint NOT NULL,
                due_ms bigint,
                request_id text,
                body text NOT NULL,
                owner_id text,
                claimed_ms bigint
            )""",
            "CREATE INDEX machina_jobs_inbox ON machina_jobs (name) WHERE state = 'inbox'",
            "CREATE INDEX machina_jobs_retry ON machina_jobs (due_ms) WHERE state = 'retry'",
            "CREATE INDEX machina_jobs_processing ON machina_jobs (owner_id) WHERE state = 'processing'",
            "CREATE INDEX machina_jobs_state ON machina_jobs (state, state_ms)",
            """CREATE TABLE machina_results (
                name text NOT NULL REFERENCES machina_jobs (name) ON DELETE CASCADE,
                attempt integer NOT NULL,
                envelope text NOT NULL,
                PRIMARY KEY (name, attempt)
            )""",
            """CREATE TABLE machina_dedup (
                request_id text PRIMARY KEY,
                name text NOT NULL,
                sha256 text NOT NULL,
                ts_ms bigint NOT NULL
            )""",
            "CREATE INDEX machina_dedup_ts ON machina_dedup (ts_ms)",
            """CREATE TABLE machina_workers (
                worker_id text PRIMARY KEY,
                lock_key integer GENERATED ALWAYS AS IDENTITY UNIQUE,
                host text,
                pid integer,
                started_ms bigint,
                heartbeat_ms bigint
            )""",
            """CREATE TABLE machina_counters (
                instance text NOT NULL,
                counter text NOT NULL,
                value bigint NOT NULL,
                PRIMARY KEY (instance, counter)
            )""",
        ),
    ),
)

LATEST = MIGRATIONS[-1][0]

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS machina_schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class SchemaTooNew(QueueError):
    """The database was migrated by a newer machina than this one."""


def current_version(conn: Any) -> int:
    """The highest version applied (0: no schema yet)."""
    row = conn.execute("SELECT to_regclass('machina_schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM machina_schema_version").fetchone()
    return int(found[0]) if found else 0


def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations on ``conn`` (autocommit off); return the versions applied now."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, MIGRATION_LOCK))
        conn.execute(_VERSION_TABLE)
        version = current_version(conn)
        if version > LATEST:
            raise SchemaTooNew(
                f"the queue database has schema version {version}, newer than this machina knows ({LATEST}): "
                "upgrade machina on this host"
            )
        for number, statements in MIGRATIONS:
            if number <= version:
                continue
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO machina_schema_version (version) VALUES (%s)", (number,))
            applied.append(number)
    return applied

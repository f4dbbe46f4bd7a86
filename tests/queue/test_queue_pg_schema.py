"""The PostgreSQL queue's versioned migrations: applied once, idempotent, concurrent-safe, and a database
migrated by a newer machina is refused with a message saying what to do."""

from __future__ import annotations

import threading

import pytest
from pg_support import pg_server, pg_url, requires_postgres, sql

from machina.queue import QueueConfig, QueueError
from machina.queue.pg import PgQueue, migrate_database
from machina.queue.pgschema import LATEST, SchemaTooNew

__all__ = ["pg_server", "pg_url"]  # fixtures, imported for pytest

pytestmark = requires_postgres


def test_migrations_apply_once_and_record_their_versions(pg_url: str) -> None:
    assert migrate_database(pg_url) == (0, LATEST)
    assert migrate_database(pg_url) == (LATEST, LATEST)
    versions = sql(pg_url, "SELECT version FROM machina_schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, LATEST + 1))


def test_hosts_migrating_at_once_do_not_race(pg_url: str) -> None:
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(migrate_database(pg_url)[1])
        except Exception as exc:  # collected: the assertion below shows it
            outcomes.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [LATEST] * 4


def test_services_refuse_an_unmigrated_database_and_say_what_to_run(pg_url: str) -> None:
    with pytest.raises(QueueError, match="run `machina queue migrate`"):
        PgQueue(pg_url, QueueConfig(url=pg_url), auto_migrate=False)


def test_a_database_migrated_by_a_newer_machina_is_refused(pg_url: str) -> None:
    migrate_database(pg_url)
    sql(pg_url, f"INSERT INTO machina_schema_version (version) VALUES ({LATEST + 1})")
    with pytest.raises(SchemaTooNew, match="upgrade machina on this host"):
        PgQueue(pg_url, QueueConfig(url=pg_url))
    with pytest.raises(SchemaTooNew):
        migrate_database(pg_url)

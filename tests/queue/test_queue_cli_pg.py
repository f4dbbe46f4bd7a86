"""The queue's shell tools, unchanged, against the PostgreSQL queue (MACHINA_QUEUE_URL): migrate first,
then enqueue, ls, show, stats, retry, purge and recover; the file queue's WAL tools say clearly that this
backend has none; an unreachable database is exit 69 with no password in the message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pg_support import pg_server, pg_url, requires_postgres
from queue_shell import env_for, run_shell

from machina.queue import QueueConfig
from machina.queue.pg import PgQueue

__all__ = ["pg_server", "pg_url"]  # fixtures, imported for pytest

pytestmark = requires_postgres

GOAL = '{"goal_id":"goal.CLI.v1"}'


def sh(root: Path, url: str, script: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run_shell(script, env_for(root, MACHINA_QUEUE_URL=url, **env), stdin=stdin)


def test_migrate_creates_the_schema_once(machina_root: Path, pg_url: str) -> None:
    before = sh(machina_root, pg_url, "machina queue stats")
    assert before.returncode == 78 and "run `machina queue migrate`" in before.stderr
    first = sh(machina_root, pg_url, "machina queue migrate")
    assert first.returncode == 0 and first.stdout.strip() == "schema version 1 (was 0)"
    again = sh(machina_root, pg_url, "machina queue migrate")
    assert again.returncode == 0 and again.stdout.strip() == "schema version 1 (up to date)"
    unset = run_shell("machina queue migrate", env_for(machina_root))
    assert unset.returncode == 0 and "file queue has no schema" in unset.stderr


def test_enqueue_ls_show_stats_retry_purge_recover(machina_root: Path, pg_url: str) -> None:
    assert sh(machina_root, pg_url, "machina queue migrate").returncode == 0
    first = sh(machina_root, pg_url, "machina enqueue --json --request-id abc --priority 7", stdin=GOAL)
    again = sh(machina_root, pg_url, "machina enqueue --json --request-id abc", stdin=GOAL)
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert one["queued"].startswith("p0007_") and two == {**one, "deduplicated": True}
    conflict = sh(machina_root, pg_url, "machina enqueue --request-id abc", stdin='{"goal_id":"goal.OTHER.v1"}')
    assert conflict.returncode == 65 and "already used for a different request" in conflict.stderr
    sh(machina_root, pg_url, "machina enqueue --lines", stdin=f"{GOAL}\n{GOAL}\n")
    names = sh(machina_root, pg_url, "machina queue ls inbox").stdout.split()
    assert len(names) == 3 and names[0] == one["queued"]
    assert not (machina_root / "queue" / "inbox").exists() or not list((machina_root / "queue" / "inbox").iterdir())
    shown = json.loads(sh(machina_root, pg_url, f"machina queue show {names[0]} --json --request").stdout)
    assert shown["state"] == "inbox" and shown["request"] == {"goal_id": "goal.CLI.v1", "request_id": "abc"}
    stats = json.loads(sh(machina_root, pg_url, "machina queue stats --json").stdout)
    assert stats["sizes"]["inbox"] == 3
    assert (stats["counters"]["enqueued"], stats["counters"]["deduplicated"]) == (3, 1)

    with PgQueue(pg_url, QueueConfig(url=pg_url, max_attempts=1)) as queue:  # a worker elsewhere
        queue.fail(queue.claim("w1"), "broken")
        queue.complete(queue.claim("w1"))
        queue.claim("w9")
    assert sh(machina_root, pg_url, "machina queue ls dlq").stdout.split() == [names[0]]
    retried = sh(machina_root, pg_url, "machina queue ls dlq | xargs -n1 machina queue retry")
    assert retried.returncode == 0 and retried.stdout.split() == [names[0].replace(".json", ".a2.json")]
    assert sh(machina_root, pg_url, "machina queue purge done --older-than 1h").stdout.strip() == "0"
    assert sh(machina_root, pg_url, "machina queue purge done --older-than 0s").stdout.strip() == "1"
    recovered = sh(machina_root, pg_url, "machina queue recover")  # w9's process closed: it died
    assert recovered.returncode == 0 and recovered.stdout.split() == [names[2]]
    missing = sh(machina_root, pg_url, "machina queue show p5000_rq_1700000000000_0000000000.json")
    assert missing.returncode == 67 and "no such job" in missing.stderr


def test_wal_tools_say_this_backend_has_no_wal(machina_root: Path, pg_url: str) -> None:
    assert sh(machina_root, pg_url, "machina queue migrate").returncode == 0
    for script in ("machina queue checkpoint", "machina wal verify", "machina queue wal verify --json"):
        proc = sh(machina_root, pg_url, script)
        assert proc.returncode == 64, proc.stderr
        assert "postgresql queue, which keeps no WAL of its own" in proc.stderr and proc.stdout == ""


def test_an_unreachable_database_is_exit_69_without_the_password(machina_root: Path, tmp_path: Path) -> None:
    secret = "pw-never-shown-1234"
    url = f"postgresql:///machina?host={tmp_path}&user=machina&connect_timeout=2"
    proc = sh(machina_root, url, "machina queue stats", MACHINA_QUEUE_PASSWORD=secret)
    assert proc.returncode == 69, proc.stderr
    assert "queue database unavailable" in proc.stderr and secret not in proc.stderr + proc.stdout
    enqueue = sh(machina_root, url, "machina enqueue", stdin=GOAL, MACHINA_QUEUE_PASSWORD=secret)
    assert enqueue.returncode == 69 and secret not in enqueue.stderr


def test_a_password_in_the_url_is_refused_before_connecting(machina_root: Path) -> None:
    proc = sh(machina_root, "postgresql://machina:hunter2@db.invalid/machina", "machina queue stats")
    assert proc.returncode == 78 and "hunter2" not in proc.stderr and "MACHINA_QUEUE_PASSWORD" in proc.stderr

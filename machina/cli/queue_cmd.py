"""``machina enqueue``, ``machina queue ...`` and ``machina wal verify``: the queue's shell tools.

Data goes to stdout (names one per line, or JSON with ``--json``), errors to stderr as one line.  Exit
codes: 0 ok; 1 ``wal verify`` found damage; 64 usage; 65 invalid request or request_id conflict; 66 input
file missing; 67 no such job; 73 queue not writable (disk full, read-only); 75 busy (worker id in use,
another checkpoint running); 78 bad configuration.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from machina.approvals import approvals_error
from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.queue import (
    FINAL_STATES,
    STATES,
    BaseQueue,
    InvalidRequest,
    QueueNotWritable,
    WalQueue,
    load_request,
    open_queue,
)
from machina.root import open_root
from machina.toolhost.client import ToolhostClient

_DURATION = re.compile(r"(?P<n>\d+)(?P<unit>ms|s|m|h|d|w)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``30s``, ``15m``, ``12h``, ``7d``, ``2w``; a bare number is seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 30s, 15m, 12h, 7d)")
    return int(match["n"]) * _UNIT_MS[match["unit"] or "s"]


@contextlib.contextmanager
def _opened(root: str | None) -> Iterator[tuple[BaseQueue, Any]]:
    """The configured queue and configuration, closed at the end of the block."""
    cfg = bootstrap("machina", overrides_from(root))
    queue = open_queue(cfg)
    try:
        yield queue, cfg
    finally:
        queue.close()


# --- machina enqueue ---------------------------------------------------------------------------------------


@click.command()
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--priority", type=click.IntRange(0, 9999), help="0..9999, lower runs first (default: _queue.priority, else 5000)."
)
@click.option(
    "--request-id", metavar="ID", help="Idempotency key: a repeat within MACHINA_DEDUP_TTL_MS is not queued twice."
)
@click.option("--lines", is_flag=True, help="One request per line (JSON lines) instead of one request.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ok":true,"queued":NAME,...} per request.')
@root_option
def enqueue(
    source: str, priority: int | None, request_id: str | None, lines: bool, as_json: bool, root: str | None
) -> int:
    """Queue a run request read from FILE (or stdin) and print the queued job's name.

    The request is JSON with at least "goal_id". It is durable (under MACHINA_WAL_FSYNC) once the name is
    printed. With --lines every non-empty line is a request; a bad line is reported on stderr with its
    number and the rest are still queued (exit 65 at the end). Requests larger than
    MACHINA_API_MAX_BODY_BYTES are refused, as the HTTP API refuses them.

    Exit codes: 0 queued; 65 invalid request or request_id reused with another body; 66 no such FILE;
    73 queue not writable (disk full, read-only); 78 bad configuration.
    """
    if lines and request_id:
        raise click.UsageError("--request-id names one request; with --lines put request_id in each line")
    bad = 0
    with _opened(root) as (queue, cfg), _input(source) as stream:
        limit = cfg["MACHINA_API_MAX_BODY_BYTES"]
        for number, data in _requests(stream, lines):
            try:
                if len(data) > limit:
                    raise InvalidRequest(f"{len(data)} bytes is over MACHINA_API_MAX_BODY_BYTES ({limit})")
                result = queue.enqueue(load_request(data, request_id), priority=priority)
            except QueueNotWritable:
                raise
            except MachinaError as exc:
                if not lines:
                    raise
                click.echo(f"machina: line {number}: {exc}", err=True)
                bad += 1
                continue
            if as_json:
                echo_json(result.as_response())
            else:
                click.echo(result.name)
    return ExitCode.DATAERR if bad else ExitCode.OK


class _input:
    """``-`` is stdin; a missing FILE is exit 66."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self.source == "-":
            return sys.stdin.buffer
        try:
            self.handle = open(self.source, "rb")
        except FileNotFoundError:
            raise MachinaError(f"{self.source}: no such file", ExitCode.NOINPUT) from None
        except OSError as exc:
            raise MachinaError(f"{self.source}: {exc.strerror}", ExitCode.NOINPUT) from None
        return self.handle

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _requests(stream: IO[bytes], lines: bool) -> Iterator[tuple[int, bytes]]:
    if not lines:
        yield 1, stream.read()
        return
    for number, line in enumerate(stream, 1):
        if line.strip():
            yield number, line


# --- machina queue ---------------------------------------------------------------------------------------


@click.group()
def queue() -> None:
    """Inspect and operate the job queue (under $MACHINA_ROOT/queue, or the MACHINA_QUEUE_URL database).

    States: inbox (waiting), processing (claimed), retry (waiting for a retry), asked (waiting for an
    operator to approve a tool call: `machina queue approve`), done, failed (permanent failure), dlq
    (attempts spent). Exit codes: 0 ok, 64 usage, 67 no such job, 73 not writable, 75 busy, 77 lease
    refused, 78 bad configuration.
    """


@queue.command("ls")
@click.argument("state", required=False, type=click.Choice(STATES))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job and line.")
@root_option
def ls(state: str | None, as_json: bool, root: str | None) -> None:
    """List jobs: names only for one STATE (pipe them on), "STATE NAME" lines for all.

    The inbox is listed in claim order (priority, then age), retry/ by due time.
    """
    with _opened(root) as (q, _):
        for one in [state] if state else STATES:
            for job in q.list_jobs(one):
                if as_json:
                    echo_json(job.as_dict())
                else:
                    click.echo(job.name if state else f"{one} {job.name}")


@queue.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--request", "with_request", is_flag=True, help="Include the request body.")
@root_option
def show(name: str, as_json: bool, with_request: bool, root: str | None) -> None:
    """Show where job NAME is (state, attempt, owner) and each attempt's result.  Exit 67 if unknown."""
    with _opened(root) as (q, _):
        status = q.job_status(name, with_request=with_request)
    if status is None:
        raise MachinaError(f"{name}: no such job", ExitCode.NOTFOUND)
    if as_json:
        echo_json(status.as_dict())
        return
    info = status.as_dict()
    for key in ("name", "state", "file", "attempt", "priority", "enqueued_ms", "due_ms"):
        if info[key] is not None:
            click.echo(f"{key}: {info[key]}")
    if status.owner:
        click.echo("owner: " + " ".join(f"{k}={v}" for k, v in status.owner.items()))
    for result in status.results:
        error = f" error={result['error']!r}" if result.get("error") else ""
        click.echo(f"attempt {result.get('attempt')}: {result.get('status')}{error}")
    if status.state == "asked":
        for call in _asked_calls(status):
            click.echo("asks: " + _describe_call(call))
    if status.request is not None:
        click.echo("request: " + _compact(status.request))


def _compact(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@queue.command()
@click.option("--json", "as_json", is_flag=True, help='{"sizes":{...},"counters":{...}}')
@root_option
def stats(as_json: bool, root: str | None) -> None:
    """Jobs per state, and transition counters since the WAL began (all processes)."""
    with _opened(root) as (q, _):
        result = q.stats()
    if as_json:
        echo_json(result.as_dict())
        return
    for state, size in result.sizes.items():
        click.echo(f"{state} {size}")
    for counter, value in result.counters.items():
        click.echo(f"{counter} {value}")


@queue.command()
@click.argument("name", required=False)
@click.option("--all-dlq", is_flag=True, help="Retry every job in dlq/.")
@root_option
def retry(name: str | None, all_dlq: bool, root: str | None) -> None:
    """Send job NAME (in dlq/, failed/ or retry/) back to the inbox for one more attempt.

    A job waiting in retry/ runs now. Prints the new file name(s). Exit 67 if NAME is not in those states.
    """
    if bool(name) == all_dlq:
        raise click.UsageError("give NAME or --all-dlq")
    with _opened(root) as (q, _):
        names = [job.name for job in q.list_jobs("dlq")] if all_dlq else [name or ""]
        for one in names:
            click.echo(q.requeue(one))


@queue.command()
@click.argument("name")
@click.option(
    "--ttl", metavar="DURATION", help="How long the leases wait for the job to run (default MACHINA_LEASE_MAX_TTL_MS)."
)
@click.option("--socket", "socket_path", metavar="PATH", help="Toolhost socket (default: toolhost.sock of the root).")
@root_option
def approve(name: str, ttl: str | None, socket_path: str | None, root: str | None) -> None:
    """Approve the tool calls job NAME (in asked/) stopped at, and requeue it.

    Issues one single-use lease per call its last attempt lists (the call that asked, and any that ran on
    a lease before it: the job runs again from the start), each bound to that call's AID and inputs, and
    sends the job back to the inbox carrying them. Each approved call is printed on stderr (`machina queue
    show NAME` lists them first); the new file name on stdout. Needs an administrative toolhost peer.
    Exit 67 if NAME is not in asked/, 69 toolhost not running, 77 a lease was refused.
    """
    with _opened(root) as (q, cfg):
        status = q.job_status(name)
        if status is None:
            raise MachinaError(f"{name}: no such job", ExitCode.NOTFOUND)
        if status.state != "asked":
            raise MachinaError(f"{name}: is in {status.state}/: only jobs in asked/ can be approved", ExitCode.NOTFOUND)
        calls = _asked_calls(status)
        if not calls:
            raise MachinaError(f"{name}: its last attempt lists no call to approve", ExitCode.DATAERR)
        ttl_ms = parse_duration_ms(ttl) if ttl else cfg["MACHINA_LEASE_MAX_TTL_MS"]
        path = socket_path or open_root(cfg).socket_path("toolhost")
        leases = []
        with ToolhostClient(path, timeout=float(cfg["MACHINA_TOOLHOST_TIMEOUT"])) as client:
            for call in calls:
                granted = client.issue_lease(call["aid"], call["tier"], ttl_ms, inputs_digest=call["inputs_digest"])
                leases.append(
                    {"aid": call["aid"], "inputs_digest": call["inputs_digest"], "token": granted["lease_token"]}
                )
                click.echo("approved " + _describe_call(call), err=True)
        click.echo(q.approve(name, leases))


def _asked_calls(status: Any) -> list[dict[str, Any]]:
    """The calls of the job's last attempt that need a lease to run again, each once."""
    last = status.results[-1].get("result") if status.results else None
    calls = last.get("approvals") if isinstance(last, dict) else None
    if approvals_error(calls) is not None:
        return []
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for call in calls or []:
        unique.setdefault((call["aid"], call["inputs_digest"]), call)
    return list(unique.values())


def _describe_call(call: dict[str, Any]) -> str:
    inputs = _compact(call["inputs"]) if "inputs" in call else "(too long to show: see the run log)"
    return f"{call['aid']} tier {call['tier']} ({call['status']}) inputs {inputs} sha256 {call['inputs_digest'][:16]}"


@queue.command()
@click.argument("state", type=click.Choice(FINAL_STATES))
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 7d, 12h, 30m, 45s.")
@root_option
def purge(state: str, older_than: str, root: str | None) -> None:
    """Delete finished jobs (and their results) that entered STATE more than DURATION ago.

    Prints how many were removed. Jobs still waiting or running are never purged.
    """
    age = parse_duration_ms(older_than)
    with _opened(root) as (q, _):
        click.echo(q.purge(state, age))


@queue.command()
@click.option("--worker", "worker_id", metavar="ID", help="Take over this worker id (it must not be running).")
@root_option
def recover(worker_id: str | None, root: str | None) -> None:
    """Give orphaned claims back to the inbox (attempt + 1) and print their names.

    Without --worker: claims of dead workers, of workers silent longer than MACHINA_CLAIM_TIMEOUT_MS, and
    of no worker. Workers do this themselves; this is for an operator in a hurry. Exit 75 if --worker
    names a running worker.
    """
    with _opened(root) as (q, _):
        for name in q.recover(worker_id):
            click.echo(name)


@queue.command()
@root_option
def checkpoint(root: str | None) -> None:
    """Write a WAL checkpoint now and delete the segments it covers.  Exit 75 if one is being written."""
    with _opened(root) as (q, cfg):
        wal_queue = _wal_queue(q)
        if not cfg["MACHINA_WAL_ENABLE"]:
            click.echo("MACHINA_WAL_ENABLE=0: no WAL to checkpoint", err=True)
            return
        if not wal_queue.checkpoint():
            raise MachinaError("another process is writing a checkpoint; try again", ExitCode.TEMPFAIL)
        click.echo("checkpoint written")


def _wal_queue(queue: BaseQueue) -> WalQueue:
    """The queue's own WAL, which only the file queue has."""
    if not isinstance(queue, WalQueue):
        raise MachinaError(
            f"MACHINA_QUEUE_URL selects the {queue.backend} queue, which keeps no WAL of its own: the database's "
            "WAL is its log (checkpoints, verification and backups are the database's: docs/SCALING.md)",
            ExitCode.USAGE,
        )
    return queue


@queue.command()
@root_option
def migrate(root: str | None) -> None:
    """Create or upgrade the queue's tables in the MACHINA_QUEUE_URL database; prints the schema version.

    Idempotent; safe while workers run and from several hosts at once. Run it once before the first start
    and after each upgrade of machina. With the file queue there is nothing to migrate (exit 0). Exit 69
    database unreachable, 78 bad configuration.
    """
    cfg = bootstrap("machina", overrides_from(root))
    url = cfg["MACHINA_QUEUE_URL"]
    if url is None:
        click.echo("MACHINA_QUEUE_URL is unset: the file queue has no schema to migrate", err=True)
        return
    from machina.queue.pg import migrate_database

    before, after = migrate_database(url, cfg["MACHINA_QUEUE_PASSWORD"])
    click.echo(f"schema version {after}" + (f" (was {before})" if before != after else " (up to date)"))


# --- machina wal verify (also: machina queue wal verify) ---------------------------------------------------


@click.group()
def wal() -> None:
    """The queue's write-ahead log under $MACHINA_ROOT/queue/wal."""


@wal.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@root_option
def verify(as_json: bool, root: str | None) -> int:
    """Check every WAL segment and the checkpoint without changing them.

    Exit 0 when clean, 1 when a segment has a torn or corrupt tail or the checkpoint is corrupt (the
    queue cuts such tails itself at its next start; jobs are never lost, the directories are the truth).
    """
    with _opened(root) as (q, _):
        report = _wal_queue(q).verify_wal()
    if as_json:
        echo_json(
            {
                "ok": report.ok,
                "checkpoint": report.checkpoint,
                "records": report.records,
                "segments": [vars(s) for s in report.segments],
            }
        )
    else:
        click.echo(f"checkpoint: {report.checkpoint}")
        for seg in report.segments:
            state = "sealed" if seg.sealed else "live"
            problem = f" BAD at byte {seg.bad_offset}: {seg.problem}" if seg.problem else ""
            click.echo(f"{seg.name}: {seg.records} records, {seg.size} bytes, {state}{problem}")
        click.echo("ok" if report.ok else "damaged")
    return ExitCode.OK if report.ok else ExitCode.FAILURE


queue.add_command(wal)

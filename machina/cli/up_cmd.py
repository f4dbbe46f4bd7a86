"""``machina up``, ``machina serve`` and ``machina status``: run the suite without systemd, and check it.

``up`` and ``serve`` are one command under two names (``serve`` is the operations manual's spelling, with
``--host`` and ``--port``).  Both run the suite's executables as supervised child processes
(:mod:`machina.up`) until Ctrl-C or SIGTERM.  ``status`` reports each component's health, whichever of
``machina up`` or systemd runs the suite, and exits 69 when something is down.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir
from machina.hardening import make_undumpable
from machina.owned import cannot_create, sweep_temps
from machina.proctree import pid_alive
from machina.root import Root, open_root
from machina.signals import ShutdownSignal
from machina.up import health
from machina.up.components import MAX_WORKERS, http_url, suite
from machina.up.pidfiles import PIDFILE_SUFFIX, read_pidfile, remove_pidfile
from machina.up.supervisor import STATE_FILE, Supervisor

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("machina.up")
LOCK_FILE = "machina-up.lock"


def _workers_option(func: F) -> F:
    return click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help=f"Worker processes (default: MACHINA_WORKERS, 2; capped at {MAX_WORKERS}).",
    )(func)


@click.command()
@_workers_option
@root_option
def up(workers: int | None, root: str | None) -> int:
    """Run the whole suite here, as child processes of this command, until Ctrl-C or SIGTERM.

    Starts machina-toolhost and machina-embed, then machina-enqueued (HTTP on MACHINA_API_HOST:MACHINA_API_PORT,
    127.0.0.1:8080 by default) and N machina-worker processes, with the same arguments and environment as
    their systemd units.  A child that crashes, misses its watchdog or never becomes ready is restarted with
    backoff; Ctrl-C or SIGTERM stops them all (SIGTERM, wait, SIGKILL) and leaves no process behind.  Pid
    files and machina-up.json go to the runtime directory (MACHINA_RUNTIME_DIR, else MACHINA_ROOT/run).

    Exit status: 0 after a requested stop, 73 when the runtime directory is read-only or full, 75 when
    machina up already runs on this root, 78 when a child reports a bad configuration.
    """
    return run_suite(root, workers, host=None, port=None)


@click.command()
@click.option("--host", metavar="ADDR", default=None, help="Address of the HTTP API (MACHINA_API_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port of the HTTP API (MACHINA_API_PORT).")
@_workers_option
@root_option
def serve(host: str | None, port: int | None, workers: int | None, root: str | None) -> int:
    """Serve HTTP enqueue with integrated workers: `machina up` with the API address on the command line.

    Example: machina serve --host 127.0.0.1 --port 8080 --workers 4
    """
    return run_suite(root, workers, host=host, port=port)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (the report ops_healthcheck writes).")
@click.option("--user", is_flag=True, help="Ask the user's systemd manager (systemctl --user) for the units.")
@root_option
def status(as_json: bool, user: bool, root: str | None) -> int:
    """Show each component's health: its process, its socket, GET /health.

    Looks for a machina up running on this root first (its pid files in the runtime directory), then for
    the systemd units.  Exit status: 0 when every component is healthy, 69 when one is down or nothing runs.
    """
    cfg = bootstrap("machina", overrides_from(root))
    runtime_dir = Root(cfg["MACHINA_ROOT"], cfg["MACHINA_RUNTIME_DIR"]).runtime_dir if cfg["MACHINA_ROOT"] else None
    runtime_dir = runtime_dir or cfg["MACHINA_RUNTIME_DIR"] or ""
    systemctl = health.run_systemctl(user) if user or health.systemd_running() else None
    rep = health.report(runtime_dir, systemctl)
    if as_json:
        echo_json(rep.to_json())
    else:
        print_report(rep)
    return ExitCode.OK if rep.ok else ExitCode.UNAVAILABLE


def print_report(rep: health.Report) -> None:
    click.echo(f"manager: {rep.manager}" + (f" ({rep.detail})" if rep.detail else ""))
    if not rep.components:
        click.echo("nothing is running")
        return
    width = max(len(c.name) for c in rep.components)
    for c in rep.components:
        mark = "ok  " if c.ok else "DOWN"
        pid = str(c.pid) if c.pid else "-"
        checks = "; ".join(f"{ch.what} {'ok' if ch.ok else 'FAILED'}: {ch.detail}" for ch in c.checks)
        click.echo(f"{mark} {c.name:<{width}}  {c.state:<16} pid {pid:<7} restarts {c.restarts}  {checks}")


def cap_workers(workers: int | None) -> int | None:
    """The manual's rule: workers capped at 64 (a larger --workers is lowered, with a warning)."""
    if workers is not None and workers > MAX_WORKERS:
        click.echo(f"machina: --workers {workers} capped at {MAX_WORKERS}", err=True)
        return MAX_WORKERS
    return workers


def run_suite(root: str | None, workers: int | None, host: str | None, port: int | None) -> int:
    workers = cap_workers(workers)
    overrides = overrides_from(
        root,
        MACHINA_API_HOST=host,
        MACHINA_API_PORT=str(port) if port else None,
        MACHINA_WORKERS=str(workers) if workers else None,
    )
    cfg = bootstrap("machina", overrides)
    # The supervisor keeps the secrets in the environment it hands its daemons, so it cannot drop them; it
    # does keep every other process of its uid out of its /proc/<pid>/environ and memory.
    make_undumpable()
    machina_root = open_root(cfg)
    runtime_dir = machina_root.runtime_dir
    try:
        ensure_dir(runtime_dir)
    except OSError as exc:
        raise cannot_create(runtime_dir, exc) from None
    host, port, workers = cfg["MACHINA_API_HOST"], cfg["MACHINA_API_PORT"], cfg["MACHINA_WORKERS"]
    lock_fd = _lock_runtime_dir(runtime_dir)
    try:
        _sweep_runtime_dir(runtime_dir)
        env = dict(os.environ)
        env.update({k: v for k, v in overrides.items() if k in ("MACHINA_API_HOST", "MACHINA_API_PORT")})
        env["MACHINA_ROOT"] = machina_root.path  # absolute: every child agrees, whatever its cwd
        env["MACHINA_RUNTIME_DIR"] = runtime_dir
        optional = frozenset({"telegram"} if cfg["TELEGRAM_BOT_TOKEN"] else set())
        specs = suite(workers, host, port, machina_root.socket_path, optional=optional)
        endpoints = {
            "http": http_url(host, port),
            "toolhost": machina_root.socket_path("toolhost"),
            "embed": machina_root.socket_path("embed"),
            "root": machina_root.path,
        }
        supervisor = Supervisor(specs, runtime_dir, env, endpoints=endpoints, on_ready=lambda: _banner(endpoints))
        log.info("starting %d processes on %s (runtime dir %s)", len(specs), machina_root.path, runtime_dir)
        with ShutdownSignal() as stop:
            code = supervisor.run(stop)
        if supervisor.fatal is not None:
            raise MachinaError(
                f"{supervisor.fatal.spec.name} {supervisor.fatal.last_exit}: a bad configuration "
                "(see its error above); every process was stopped",
                ExitCode.CONFIG,
            )
        log.info("stopped; no process left")
        return code
    finally:
        _unlock_runtime_dir(runtime_dir, lock_fd)


def _banner(endpoints: dict[str, str]) -> None:
    http = endpoints["http"]
    click.echo(
        f"machina is up (root {endpoints['root']}).\n"
        f'  send jobs:  curl -H "Authorization: Bearer $MACHINA_API_TOKEN" --data-binary @job.json {http}/enqueue\n'
        f"  or:         machina enqueue job.json\n"
        f"  health:     {http}/health   (machina status)\n"
        f"  tool host:  {endpoints['toolhost']}\n"
        f"  stop:       Ctrl-C (or SIGTERM to pid {os.getpid()})"
    )


def _lock_runtime_dir(runtime_dir: str) -> int:
    """One machina up per runtime dir: an flock held for the supervisor's life (released even by SIGKILL).

    A clean stop unlinks the lock file while holding it, so a starter that opened the old file before the
    unlink may lock a file no longer on disk: it checks, and tries again with the one that is.
    """
    path = os.path.join(runtime_dir, LOCK_FILE)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise cannot_create(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            state = health.read_up_state(runtime_dir)
            who = f" (pid {state['pid']})" if state else ""
            raise MachinaError(f"machina up is already running on {runtime_dir}{who}", ExitCode.TEMPFAIL) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _unlock_runtime_dir(runtime_dir: str, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, LOCK_FILE))  # still ours: nobody else can hold it now
    os.close(fd)


def _sweep_runtime_dir(runtime_dir: str) -> None:
    """What a SIGKILLed machina up left: pid files of processes that are gone, half-written temporary files.

    Called with the lock held, so no other machina up is writing here; a pid file whose process still
    runs (a systemd unit sharing the directory) is left alone.
    """
    for name in os.listdir(runtime_dir):
        if not name.endswith(PIDFILE_SUFFIX):
            continue
        path = os.path.join(runtime_dir, name)
        pid = read_pidfile(path)
        if pid is None or not pid_alive(pid):
            remove_pidfile(path)
            log.info("removed stale pid file %s", path)
    if health.read_up_state(runtime_dir) is None:  # we hold the lock: any state file is a dead supervisor's
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(runtime_dir, STATE_FILE))
    sweep_temps(runtime_dir)

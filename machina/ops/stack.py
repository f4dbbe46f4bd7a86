"""The ops set: ``ops_detect``, ``ops_kill``, ``ops_start``, ``ops_restart``, ``ops_healthcheck``.

Whoever runs the suite is asked, never guessed from process names: ``systemctl`` where systemd runs it
(machina.target and its units installed), else the pid files and state file of ``machina up`` in the
runtime directory.  A pid read from a file is signalled only after checking that the process still is the
executable the file names (pids are reused).  Commands that change anything do so only with ``--apply``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import click

from machina.cli.common import bootstrap, root_option
from machina.config import Config
from machina.exitcodes import ExitCode, MachinaError
from machina.fsutil import ensure_dir, write_atomic
from machina.ops.paths import configured_root, ops_dir
from machina.proctree import pid_alive
from machina.root import Root
from machina.up import health
from machina.up.components import AGENTS, SERVERS, locate
from machina.up.pidfiles import PIDFILE_SUFFIX, pid_matches, read_pidfile, remove_pidfile
from machina.up.supervisor import SUPERVISOR_PIDFILE

F = TypeVar("F", bound=Callable[..., Any])
TARGET = "machina.target"
STOP_TIMEOUT = 120.0  # the supervisor stops its children (worker: up to 90 s) before it exits itself


@dataclass
class Proc:
    name: str
    pid: int | None
    executable: str
    alive: bool
    pidfile: str = ""


@dataclass
class Situation:
    manager: str  # "machina up", "systemd" or "none"
    runtime_dir: str
    supervisor: Proc | None
    processes: list[Proc]
    stale_pidfiles: list[str]
    units: list[dict[str, Any]]

    @property
    def running(self) -> bool:
        return bool(
            (self.supervisor and self.supervisor.alive)
            or any(p.alive for p in self.processes)
            or any(u["active"] for u in self.units)
        )


class Ops:
    """What the ops commands share: the configuration, the root, and the way to reach systemd."""

    def __init__(self, cfg: Config, user: bool) -> None:
        self.cfg = cfg
        self.root: Root | None = configured_root(cfg)
        self.runtime_dir = self.root.runtime_dir if self.root else (cfg["MACHINA_RUNTIME_DIR"] or "")
        self.user = user
        self.systemctl = health.run_systemctl(user) if user or health.systemd_running() else None

    def require_root(self) -> Root:
        self.cfg.require_root()
        assert self.root is not None
        return self.root

    def systemd_has_suite(self) -> bool:
        return self.systemctl is not None and health.systemd_report(self.systemctl) is not None

    def systemctl_argv(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user else []), *args]

    # --- detect -------------------------------------------------------------------------------------

    def situation(self) -> Situation:
        state = health.read_up_state(self.runtime_dir) if self.runtime_dir else None
        units: list[dict[str, Any]] = []
        if state is None and self.systemctl is not None:
            rep = health.systemd_report(self.systemctl)
            if rep is not None:
                units = [
                    {"unit": c.name, "state": c.state, "pid": c.pid, "active": c.state.startswith("active")}
                    for c in rep.components
                ]
        supervisor = None
        procs: list[Proc] = []
        stale: list[str] = []
        for name, path in self._pidfiles():
            pid = read_pidfile(path)
            exe = self._executable_of(name, state)
            alive = pid is not None and exe is not None and pid_matches(pid, exe)
            if not alive:
                stale.append(path)
                continue
            proc = Proc(name, pid, exe or "?", alive, path)
            if name == SUPERVISOR_PIDFILE:
                supervisor = proc
            else:
                procs.append(proc)
        manager = "machina up" if supervisor else "systemd" if units else "machina up" if procs else "none"
        return Situation(manager, self.runtime_dir, supervisor, procs, stale, units)

    def _pidfiles(self) -> list[tuple[str, str]]:
        if not self.runtime_dir or not os.path.isdir(self.runtime_dir):
            return []
        return sorted(
            (n.removesuffix(PIDFILE_SUFFIX), os.path.join(self.runtime_dir, n))
            for n in os.listdir(self.runtime_dir)
            if n.endswith(PIDFILE_SUFFIX)
        )

    @staticmethod
    def _executable_of(name: str, state: dict[str, Any] | None) -> str | None:
        """The executable a pid file's process must be; None for a pid file we do not know (never touched)."""
        if state is not None:
            if name == SUPERVISOR_PIDFILE:
                return str(state.get("executable", "machina"))
            component = state.get("components", {}).get(name)
            if component:
                return str(component.get("executable"))
        if name == SUPERVISOR_PIDFILE:
            return "machina"
        if name in SERVERS:
            return SERVERS[name][0]
        if name in AGENTS:
            return AGENTS[name][0]
        if name.startswith("worker-") and name.removeprefix("worker-").isdigit():
            return "machina-worker"
        return None

    # --- kill ---------------------------------------------------------------------------------------

    def kill(self, situation: Situation, apply: bool, timeout: float) -> list[str]:
        """Stop the suite: systemctl stop, or TERM the supervisor (it stops its children), wait, KILL."""
        actions: list[str] = []
        if situation.units:
            argv = self.systemctl_argv("stop", TARGET)
            actions.append(" ".join(argv))
            if apply:
                subprocess.run(argv, check=False, timeout=timeout + 30)
            return actions
        targets = ([situation.supervisor] if situation.supervisor else []) + situation.processes
        for proc in targets:
            actions.append(f"SIGTERM {proc.name} (pid {proc.pid}), wait up to {timeout:g}s, then SIGKILL")
        for path in situation.stale_pidfiles:
            actions.append(f"remove stale pid file {path}")
        if not apply:
            return actions
        for proc in targets:  # the supervisor first: it stops its own children in order
            terminate(proc, timeout)
        for path in situation.stale_pidfiles:
            remove_pidfile(path)
        return actions


def terminate(proc: Proc, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, SIGKILL: only while the pid still is ``proc.executable``."""
    assert proc.pid is not None
    if not pid_matches(proc.pid, proc.executable):
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        raise MachinaError(f"not allowed to signal {proc.name} (pid {proc.pid})", ExitCode.NOPERM) from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid):
            return
        time.sleep(0.1)
    if pid_matches(proc.pid, proc.executable):
        click.echo(f"{proc.name} (pid {proc.pid}) did not stop within {timeout:g}s: SIGKILL", err=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def _write_report(path: str, data: dict[str, Any]) -> None:
    try:
        ensure_dir(os.path.dirname(path))
        write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), fsync=True, mode=0o640)
    except OSError as exc:
        raise MachinaError(f"{path}: cannot write report: {exc.strerror}", ExitCode.CANTCREAT) from None


def _report_path(ops: Ops, output: str | None, name: str) -> str | None:
    if output == "-":
        return None
    if output:
        return output
    if ops.root is None:
        return None
    return os.path.join(ops_dir(ops.root), name)


# --- commands ------------------------------------------------------------------------------------------

_user_option = click.option("--user", is_flag=True, help="Use the user's systemd manager (systemctl --user).")


def _ops(root: str | None, user: bool, program: str) -> Ops:
    return Ops(bootstrap(program, {"MACHINA_ROOT": os.path.abspath(root)} if root else None), user)


@click.group()
def ops() -> None:
    """Find, stop, start, restart and check the running suite (the scripts/ops_*.sh of the manual)."""


@ops.command()
@click.option("--output", metavar="PATH", help="Where to write the snapshot ('-': nowhere).")
@_user_option
@root_option
def detect(output: str | None, user: bool, root: str | None) -> int:
    """Snapshot what of the suite runs, and who runs it, to MACHINA_ROOT/state/ops/pids.current.json.

    Reads machina up's pid files (each checked against its executable) or systemd's units; never looks
    processes up by name.  Exit status: 0 something runs, 69 nothing runs.
    """
    o = _ops(root, user, "ops_detect")
    s = o.situation()
    click.echo(f"manager: {s.manager}")
    for proc in ([s.supervisor] if s.supervisor else []) + s.processes:
        click.echo(f"  {proc.name:<12} pid {proc.pid:<8} {proc.executable}")
    for unit in s.units:
        click.echo(f"  {unit['unit']:<28} {unit['state']:<18} pid {unit['pid'] or '-'}")
    for stale in s.stale_pidfiles:
        click.echo(f"  stale pid file {stale}")
    report = _report_path(o, output, "pids.current.json")
    if report:
        _write_report(report, {"taken_at": time.time(), **asdict(s)})
        click.echo(f"snapshot: {report}", err=True)
    return ExitCode.OK if s.running else ExitCode.UNAVAILABLE


@ops.command()
@click.option("--apply", is_flag=True, help="Really stop (without it: print what would be done).")
@click.option("--dry-run", is_flag=True, help="Print what would be done (the default).")
@click.option("--timeout", type=click.FloatRange(min=0), default=STOP_TIMEOUT, show_default=True, help="Seconds.")
@_user_option
@root_option
def kill(apply: bool, dry_run: bool, timeout: float, user: bool, root: str | None) -> int:
    """Stop the suite: SIGTERM, wait, SIGKILL (by pid file, or `systemctl stop machina.target`).

    Exit status: 0 stopped (or, dry-run, the plan printed), 1 something still runs, 77 not allowed.
    """
    apply = _apply(apply, dry_run)
    o = _ops(root, user, "ops_kill")
    actions = o.kill(o.situation(), apply, timeout)
    _print_actions(actions, apply, "nothing of the suite runs")
    if apply and o.situation().running:
        click.echo("still running after ops_kill", err=True)
        return ExitCode.FAILURE
    return ExitCode.OK


def _starting_options(verb: str) -> Callable[[F], F]:
    """What ops_start and ops_restart share: --apply/--dry-run, --workers, --timeout, --user, --root."""

    def decorate(func: F) -> F:
        for option in reversed(
            [
                click.option("--apply", is_flag=True, help=f"Really {verb} (without it: print what would be done)."),
                click.option("--dry-run", is_flag=True, help="Print what would be done (the default)."),
                click.option("--workers", type=click.IntRange(1, 64), default=None, help="Workers for machina up."),
                click.option(
                    "--timeout", type=click.FloatRange(min=0), default=120, show_default=True, help="Seconds per phase."
                ),
                _user_option,
                root_option,
            ]
        ):
            func = option(func)
        return func

    return decorate


@ops.command()
@_starting_options("start")
def start(apply: bool, dry_run: bool, workers: int | None, timeout: float, user: bool, root: str | None) -> int:
    """Start the one standard stack: `systemctl start machina.target` where systemd has the units, else
    `machina up` in the background (log in MACHINA_ROOT/logs/machina-up.log).

    Exit status: 0 started and ready (or already running), 69 not ready within --timeout.
    """
    apply = _apply(apply, dry_run)
    o = _ops(root, user, "ops_start")
    return _start(o, apply, workers, timeout)


@ops.command()
@_starting_options("restart")
def restart(apply: bool, dry_run: bool, workers: int | None, timeout: float, user: bool, root: str | None) -> int:
    """ops_kill, then ops_start, then ops_healthcheck.  Exit status: that of the health check (0 or 69)."""
    apply = _apply(apply, dry_run)
    o = _ops(root, user, "ops_restart")
    actions = o.kill(o.situation(), apply, timeout)
    _print_actions(actions, apply, "nothing to stop")
    if apply and o.situation().running:
        click.echo("still running after the stop phase; not starting a second stack", err=True)
        return ExitCode.FAILURE
    code = _start(o, apply, workers, timeout)
    if not apply or code != ExitCode.OK:
        return code
    return _healthcheck(o, None)


@ops.command()
@click.option("--output", metavar="PATH", help="Where to write the report ('-': nowhere).")
@_user_option
@root_option
def healthcheck(output: str | None, user: bool, root: str | None) -> int:
    """Check every component (pid, socket, GET /health) and write MACHINA_ROOT/state/ops/health.report.json.

    The report is `machina status --json`.  Exit status: 0 healthy, 69 something is down or nothing runs.
    """
    return _healthcheck(_ops(root, user, "ops_healthcheck"), output)


def _healthcheck(o: Ops, output: str | None) -> int:
    rep = health.report(o.runtime_dir, o.systemctl)
    data = rep.to_json()
    path = _report_path(o, output, "health.report.json")
    if path:
        _write_report(path, data)
    down = [c.name for c in rep.components if not c.ok]
    if rep.ok:
        click.echo(f"healthy: {len(rep.components)} component(s) ({rep.manager})")
    else:
        click.echo(f"unhealthy ({rep.manager}): " + (", ".join(down) if down else rep.detail or "nothing runs"))
    return ExitCode.OK if rep.ok else ExitCode.UNAVAILABLE


def _start(o: Ops, apply: bool, workers: int | None, timeout: float) -> int:
    situation = o.situation()
    if situation.running:
        click.echo(f"already running ({situation.manager})")
        return ExitCode.OK
    if o.systemd_has_suite():
        argv = o.systemctl_argv("start", TARGET)
        click.echo(("" if apply else "would run: ") + " ".join(argv))
        if apply:
            result = subprocess.run(argv, check=False, timeout=timeout + 30)
            return ExitCode.OK if result.returncode == 0 else ExitCode.UNAVAILABLE
        return ExitCode.OK
    root = o.require_root()
    argv = [*locate("machina"), "up", "--root", root.path, *(["--workers", str(workers)] if workers else [])]
    log_path = os.path.join(root.logs, "machina-up.log")
    click.echo(("starting: " if apply else "would start: ") + " ".join(argv) + f" (log {log_path})")
    if not apply:
        return ExitCode.OK
    with open(log_path, "ab") as log_file:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # outlives this command; stopped with ops_kill
            close_fds=True,
        )
    return _wait_ready(o.runtime_dir, timeout, log_path)


def _wait_ready(runtime_dir: str, timeout: float, log_path: str) -> int:
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        state = health.read_up_state(runtime_dir)
        if state is not None:
            states = {n: c.get("state", "?") for n, c in state.get("components", {}).items()}
            if states and all(s == "running" for s in states.values()):
                click.echo(f"ready: {len(states)} processes")
                return ExitCode.OK
        time.sleep(0.2)
    waiting = ", ".join(f"{n} {s}" for n, s in sorted(states.items()) if s != "running") or "no state file"
    click.echo(f"not ready after {timeout:g}s ({waiting}); see {log_path}", err=True)
    return ExitCode.UNAVAILABLE


def _apply(apply: bool, dry_run: bool) -> bool:
    if apply and dry_run:
        raise click.UsageError("--apply and --dry-run exclude each other")
    return apply


def _print_actions(actions: list[str], apply: bool, nothing: str) -> None:
    if not actions:
        click.echo(nothing)
    for action in actions:
        click.echo(("" if apply else "would: ") + action)
    if actions and not apply:
        click.echo("dry run: nothing changed (use --apply)", err=True)

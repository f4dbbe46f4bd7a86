"""Health of the running suite, as ``machina status`` and ``ops_healthcheck`` report it.

Two managers can run the suite: ``machina up`` (its state file and pid files in the runtime directory) or
systemd (``systemctl show``).  Either way each component gets the same live probes: its pid is alive and
still the expected executable, its socket accepts a connection, ``GET /health`` answers ``{"ok": true}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from machina.up.components import http_url
from machina.up.pidfiles import pid_matches, pidfile_path, read_pidfile
from machina.up.supervisor import STATE_FILE, SUPERVISOR_PIDFILE

PROBE_TIMEOUT = 2.0
SYSTEMD_SERVICES = ("machina-toolhost.service", "machina-embed.service", "machina-enqueued.service")
SYSTEMD_SOCKETS = {
    "machina-toolhost.service": "machina-toolhost.socket",
    "machina-embed.service": "machina-embed.socket",
    "machina-enqueued.service": "machina-enqueued.socket",
}


@dataclass
class Check:
    what: str  # "pid", "socket", "http", "unit"
    ok: bool
    detail: str


@dataclass
class ComponentHealth:
    name: str
    state: str
    pid: int | None
    checks: list[Check] = field(default_factory=list)
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


@dataclass
class Report:
    manager: str  # "machina up", "systemd", or "none"
    components: list[ComponentHealth]
    checked_at: float = field(default_factory=time.time)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.components) and all(c.ok for c in self.components)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "manager": self.manager,
            "checked_at": self.checked_at,
            "detail": self.detail,
            "components": [{**asdict(c), "ok": c.ok} for c in self.components],
        }


# --- probes ----------------------------------------------------------------------------------------------


def probe_pid(pid: int | None, executable: str) -> Check:
    if pid is None:
        return Check("pid", False, "no process")
    if pid_matches(pid, executable):
        return Check("pid", True, f"{pid} is {executable}")
    return Check("pid", False, f"{pid} is not a running {executable}")


def probe_socket(path: str, timeout: float = PROBE_TIMEOUT) -> Check:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            return Check("socket", False, f"{path}: {exc.strerror or exc}")
    return Check("socket", True, f"{path} accepts connections")


def probe_http(url: str, timeout: float = PROBE_TIMEOUT) -> Check:
    try:
        reply = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        return Check("http", False, f"{url}: {type(exc).__name__}")
    try:
        body = reply.json()
    except ValueError:
        body = None
    if reply.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
        return Check("http", True, f"{url}: ok")
    return Check("http", False, f"{url}: HTTP {reply.status_code}")


def probe(kind: str, target: str) -> Check:
    return probe_socket(target) if kind == "socket" else probe_http(target)


# --- machina up ------------------------------------------------------------------------------------------


def read_up_state(runtime_dir: str) -> dict[str, Any] | None:
    """The state file of a live ``machina up`` on this runtime dir, or None."""
    try:
        with open(os.path.join(runtime_dir, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = read_pidfile(pidfile_path(runtime_dir, SUPERVISOR_PIDFILE))
    if pid is None or pid != state.get("pid") or not pid_matches(pid, str(state.get("executable", "machina"))):
        return None  # left behind by a supervisor that was killed: nothing of it is running
    return state


def up_report(runtime_dir: str) -> Report | None:
    state = read_up_state(runtime_dir)
    if state is None:
        return None
    components = []
    for name, info in sorted(state.get("components", {}).items()):
        pid = read_pidfile(pidfile_path(runtime_dir, name))
        health = ComponentHealth(name, info.get("state", "?"), pid, restarts=int(info.get("restarts", 0)))
        health.checks.append(probe_pid(pid, info.get("executable", "")))
        if info.get("probe"):
            kind, target = info["probe"]
            health.checks.append(probe(kind, target))
        components.append(health)
    return Report("machina up", components, detail=f"supervisor pid {state['pid']}")


# --- systemd ---------------------------------------------------------------------------------------------


def systemd_running() -> bool:
    """sd_booted(3): systemd is the init system."""
    return os.path.isdir("/run/systemd/system")


Systemctl = Callable[[Sequence[str]], str]


def run_systemctl(user: bool) -> Systemctl:
    def call(args: Sequence[str]) -> str:
        argv = ["systemctl", *(["--user"] if user else []), "--no-pager", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return result.stdout

    return call


def systemd_report(systemctl: Systemctl) -> Report | None:
    """Health of the units, or None when systemd does not know the suite (no machina units loaded)."""
    workers = sorted(
        line.split()[0]
        for line in systemctl(
            ["list-units", "--all", "--plain", "--no-legend", "machina-worker@*.service"]
        ).splitlines()
        if line.strip()
    )
    units = [*SYSTEMD_SERVICES, *workers]
    props = _show(systemctl, [*units, *SYSTEMD_SOCKETS.values()])
    if all(props.get(u, {}).get("LoadState") in (None, "not-found") for u in units):
        return None
    components = []
    for unit in units:
        p = props.get(unit, {})
        pid = int(p.get("MainPID", "0") or 0) or None
        state = f"{p.get('ActiveState', '?')}/{p.get('SubState', '?')}"
        health = ComponentHealth(unit, state, pid, restarts=int(p.get("NRestarts", "0") or 0))
        socket_unit = SYSTEMD_SOCKETS.get(unit)
        listening = socket_unit is not None and props.get(socket_unit, {}).get("ActiveState") == "active"
        if p.get("ActiveState") == "active":
            health.checks.append(Check("unit", True, f"{unit} {state}"))
        elif listening and p.get("ActiveState") == "inactive":
            health.checks.append(Check("unit", True, f"{unit} idle; {socket_unit} listening (socket activation)"))
        else:
            health.checks.append(Check("unit", False, f"{unit} {state}"))
        if socket_unit is not None:
            for kind, target in _listen_targets(props.get(socket_unit, {}).get("Listen", "")):
                health.checks.append(probe(kind, target))
        components.append(health)
    return Report("systemd", components)


def _show(systemctl: Systemctl, units: list[str]) -> dict[str, dict[str, str]]:
    """``systemctl show`` of several units: blocks separated by blank lines, each with Id=."""
    text = systemctl(["show", "-p", "Id,LoadState,ActiveState,SubState,MainPID,NRestarts,Listen", *units])
    result: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            result[props["Id"]] = props
    return result


def _listen_targets(listen: str) -> list[tuple[str, str]]:
    """``Listen=/run/machina/toolhost.sock (Stream)`` or ``127.0.0.1:8080 (Stream)`` -> probes."""
    targets = []
    for entry in filter(None, (e.strip() for e in listen.split(") "))):
        address = entry.split(" (")[0].strip()
        if address.startswith("/"):
            targets.append(("socket", address))
        elif ":" in address:
            host, _, port = address.rpartition(":")
            with contextlib.suppress(ValueError):
                targets.append(("http", http_url(host.strip("[]"), int(port), "/health")))
    return targets


def report(runtime_dir: str, systemctl: Systemctl | None = None) -> Report:
    """Whoever runs the suite: a live ``machina up`` on this runtime dir first, then systemd."""
    found = up_report(runtime_dir) if runtime_dir else None
    if found is not None:
        return found
    if systemctl is not None:
        found = systemd_report(systemctl)
        if found is not None:
            return found
    where = "systemd knows no machina units" if systemctl is not None else "systemd is not running"
    up = f"no machina up on {runtime_dir}" if runtime_dir else "MACHINA_ROOT is not set"
    return Report("none", [], detail=f"{up}; {where}")

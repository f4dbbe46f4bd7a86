"""What ``machina up`` runs: the suite's executables with the arguments and timings of their units.

Each entry mirrors a unit in ``systemd/`` (a test keeps ``WatchdogSec=``, ``TimeoutStartSec=`` and
``TimeoutStopSec=`` equal), so the suite behaves the same under either supervisor.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from machina.up.supervisor import ChildSpec

MAX_WORKERS = 64
# name -> (executable, unit, wave, WatchdogSec, TimeoutStartSec, TimeoutStopSec)
SERVERS = {
    "toolhost": ("machina-toolhost", "machina-toolhost.service", 0, 30.0, 90.0, 30.0),
    "embed": ("machina-embed", "machina-embed.service", 0, 60.0, 300.0, 30.0),
    "enqueued": ("machina-enqueued", "machina-enqueued.service", 1, 30.0, 90.0, 30.0),
}
WORKER = ("machina-worker", "machina-worker@.service", 1, 60.0, 90.0, 90.0)
# Daemons without a socket of their own: ready by sd_notify, checked by their pid.
AGENTS = {
    "autonomic": ("machina-autonomic", "machina-autonomic.service", 2, 60.0, 90.0, 30.0),
    "telegram": ("machina-telegram", "machina-telegram.service", 2, 60.0, 90.0, 30.0),
}
#: Agents that run only when configured: the Telegram front end needs TELEGRAM_BOT_TOKEN.
OPTIONAL_AGENTS = frozenset({"telegram"})


def locate(executable: str) -> list[str]:
    """The command that runs ``executable``: the one installed beside this ``machina``, else on PATH, else
    ``python -m machina.entrypoints`` with this interpreter (a checkout without an installed package)."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] or ""))
    sibling = os.path.join(here, executable)
    if here and os.access(sibling, os.X_OK) and not os.path.isdir(sibling):
        return [sibling]
    found = shutil.which(executable)
    if found:
        return [found]
    return [sys.executable, "-m", "machina.entrypoints", executable]


def suite(
    workers: int,
    host: str,
    port: int,
    socket_path: Callable[[str], str],
    locate: Callable[[str], list[str]] = locate,
    optional: frozenset[str] = frozenset(),
) -> list[ChildSpec]:
    """ChildSpecs for the whole suite: tool host and embed first (their sockets), then ingress and workers.

    ``socket_path`` is ``Root.socket_path``: where the tool host and embed listen by default.  ``optional``
    names the optional agents to start (``telegram`` when TELEGRAM_BOT_TOKEN is set).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be 1..{MAX_WORKERS}, got {workers}")
    specs = []
    for name, (exe, _unit, wave, watchdog, start, stop) in SERVERS.items():
        if name == "enqueued":
            args = ["--host", host, "--port", str(port)]
            probe = ("http", http_url(host, port, "/health"))
        else:
            args, probe = [], ("socket", socket_path(name))
        specs.append(ChildSpec(name, (*locate(exe), *args), exe, wave, watchdog, start, stop, probe))
    exe, _unit, wave, watchdog, start, stop = WORKER
    for n in range(1, workers + 1):
        specs.append(ChildSpec(f"worker-{n}", (*locate(exe), "--id", str(n)), exe, wave, watchdog, start, stop))
    for name, (exe, _unit, wave, watchdog, start, stop) in AGENTS.items():
        if name in OPTIONAL_AGENTS and name not in optional:
            continue
        specs.append(ChildSpec(name, tuple(locate(exe)), exe, wave, watchdog, start, stop))
    return specs


def unit_of(name: str) -> str:
    """The systemd unit that runs the component ``name`` (``worker-3`` -> ``machina-worker@3.service``)."""
    if name.startswith("worker-"):
        return f"machina-worker@{name.removeprefix('worker-')}.service"
    return {**SERVERS, **AGENTS}[name][1]


def http_url(host: str, port: int, path: str = "") -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}{path}"

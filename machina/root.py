"""The MACHINA_ROOT layout (DESIGN.md section 2) and ``machina init``.

Components get their paths from :class:`Root` instead of joining strings, so the layout is written down
once.  Directories are private (0700): the queue holds other people's requests and the logs their results.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from machina.fsutil import PRIVATE_DIR, ensure_dir

if TYPE_CHECKING:
    from machina.config import Config

QUEUE_STATES = ("inbox", "processing", "retry", "asked", "done", "failed", "dlq", "out", "tmp")

LAYOUT = (
    *(f"queue/{state}" for state in QUEUE_STATES),
    "queue/wal",
    "logs",
    "memory",
    "toolpacks",
    "goalpacks",
    "plugins",
    "run",
    "state",
)

# The only top-level directories tools reach through the file tools (FILE.READ/WRITE, ERROR_SCAN,
# REPORT_SUMMARY): an allow-list, so a directory added to the layout later (or one an operator keeps in the
# root) is out of reach until it is named here.  Nothing the suite executes or reads as configuration may
# ever live in one of them.
TOOL_DIRS = ("data", "reports", "work")


class Root:
    def __init__(self, path: str, runtime_dir: str | None = None) -> None:
        self.path = os.path.abspath(path)
        self._runtime_dir = runtime_dir

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def queue(self) -> str:
        return self.join("queue")

    def queue_dir(self, state: str) -> str:
        if state not in QUEUE_STATES:
            raise ValueError(f"unknown queue state {state!r}")
        return self.join("queue", state)

    @property
    def wal(self) -> str:
        return self.join("queue", "wal")

    @property
    def logs(self) -> str:
        return self.join("logs")

    @property
    def memory(self) -> str:
        return self.join("memory")

    @property
    def toolpacks(self) -> str:
        return self.join("toolpacks")

    @property
    def goalpacks(self) -> str:
        return self.join("goalpacks")

    @property
    def plugins(self) -> str:
        return self.join("plugins")

    @property
    def state(self) -> str:
        return self.join("state")

    @property
    def runtime_dir(self) -> str:
        """Sockets and pid files: MACHINA_RUNTIME_DIR, else $RUNTIME_DIRECTORY under systemd, else root/run."""
        if self._runtime_dir:
            return self._runtime_dir
        systemd_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        return systemd_dir or self.join("run")

    def socket_path(self, component: str) -> str:
        return os.path.join(self.runtime_dir, f"{component}.sock")

    def missing(self) -> list[str]:
        """Layout directories that do not exist (a root made by hand, or by an older version)."""
        return [rel for rel in LAYOUT if not os.path.isdir(self.join(rel))]


def init_root(path: str) -> list[str]:
    """Create the layout under ``path`` with private modes; idempotent.  Returns what was created."""
    created = []
    if ensure_dir(path, PRIVATE_DIR):
        created.append(".")
    for rel in LAYOUT:
        if ensure_dir(os.path.join(path, rel), PRIVATE_DIR):
            created.append(rel)
    return created


def open_root(cfg: Config) -> Root:
    """The configured root, checked to exist (ConfigError, exit 78, otherwise)."""
    return Root(cfg.require_root(), cfg["MACHINA_RUNTIME_DIR"])

"""Where the maintenance commands look by default: the configured root, and the checkout they run from."""

from __future__ import annotations

import os
from pathlib import Path

import machina
from machina.config import Config
from machina.root import Root

PACKAGE_DIR = Path(machina.__file__).resolve().parent


def checkout_dir() -> Path | None:
    """The source checkout this package runs from (it has a pyproject.toml), or None when installed."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "pyproject.toml").is_file() else None


def configured_root(cfg: Config) -> Root | None:
    """MACHINA_ROOT when it is set and exists; maintenance of code and docs also works without one."""
    path = cfg["MACHINA_ROOT"]
    return Root(path, cfg["MACHINA_RUNTIME_DIR"]) if path and os.path.isdir(path) else None


def ops_dir(root: Root) -> str:
    """``state/ops/``: the reports of the ops commands (pids.current.json, health.report.json)."""
    return os.path.join(root.state, "ops")

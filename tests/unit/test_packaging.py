"""The executables are declared once and runnable from a checkout."""

from __future__ import annotations

import os
import tomllib

from machina.entrypoints import ENTRY_POINTS

from ..conftest import BIN, CHECKOUT


def test_entry_points_match_pyproject_scripts() -> None:
    scripts = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == ENTRY_POINTS


def test_every_executable_has_a_bin_launcher() -> None:
    for name in ENTRY_POINTS:
        path = BIN / name
        assert path.exists() and os.access(path, os.X_OK), name

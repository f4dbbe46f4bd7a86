"""Opt-in tests under a real `systemd --user` manager: `make test-systemd` (pytest --run-systemd tests/systemd)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-systemd",
        action="store_true",
        default=False,
        help="run the units under a real systemd --user manager (root; see docs/spec/SYSTEMD-TESTING.md)",
    )

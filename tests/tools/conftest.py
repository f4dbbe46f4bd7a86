"""Fixtures for the tool tests: a real machina-toolhost (the toolhost tests' fixture) on a fresh root, and
one with the prod sandbox settings for the escape suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from ..toolhost.conftest import needs_bwrap, tcp_server, toolhost

__all__ = ["SECRET_A", "SECRET_B", "loopback_port", "needs_bwrap", "prod_host", "tcp_server", "toolhost"]

SECRET_A, SECRET_B = "tok-c0de-", "s3cr3t-77e1"  # joined in the attempts: no program source holds the secret


@pytest.fixture(scope="module")
def prod_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    """A toolhost with real bubblewrap, seccomp and the tool uid drop (root only), holding a secret."""
    if os.geteuid() != 0:
        pytest.skip("the tool uid drop needs root")
    root = tmp_path_factory.mktemp("escape") / "root"
    init_root(str(root))
    env = {
        "MACHINA_PROFILE": "prod",
        "MACHINA_SECCOMP_ENABLE": "1",
        "MACHINA_BWRAP_REQUIRED": "1",
        "MACHINA_PERMISSION_MODE": "open",
        "MACHINA_CODE_TIMEOUT": "10",
        "MACHINA_API_TOKEN": SECRET_A + SECRET_B,
    }
    with running_toolhost(str(root), env=env) as host:
        yield host


@pytest.fixture(scope="module")
def loopback_port() -> Iterator[int]:
    with tcp_server() as (port, _):
        yield port

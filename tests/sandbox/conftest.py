"""Sandbox fixtures: policies for the real bubblewrap on this machine, and for the fallback without it."""

from __future__ import annotations

import os
import shutil

import pytest

from machina import config
from machina.sandbox import SandboxPolicy, resolve_policy

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: tools drop to MACHINA_TOOL_UID only from root")
SYSTEM_PYTHON = "/usr/bin/python3"


def policy_for(**env: str) -> SandboxPolicy:
    cfg = config.load(environ={"MACHINA_ENV_FILE": "/dev/null", **env})
    return resolve_policy(cfg)


@pytest.fixture
def bwrap_policy() -> SandboxPolicy:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    return policy_for(MACHINA_SECCOMP_ENABLE="1")


@pytest.fixture
def fallback_policy() -> SandboxPolicy:
    return policy_for(MACHINA_SECCOMP_ENABLE="1").without_bwrap("test: no bubblewrap")


@pytest.fixture(params=["bwrap", "fallback"])
def any_policy(request: pytest.FixtureRequest) -> SandboxPolicy:
    if request.param == "bwrap":
        if shutil.which("bwrap") is None:
            pytest.skip("bubblewrap (bwrap) is not installed")
        return policy_for(MACHINA_SECCOMP_ENABLE="1")
    return policy_for(MACHINA_SECCOMP_ENABLE="1").without_bwrap("test: no bubblewrap")


def system_python() -> str:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run test programs inside the sandbox")
    return os.path.realpath(SYSTEM_PYTHON)

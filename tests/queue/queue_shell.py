"""Running the queue's shell tools as an operator's shell would (conftest's bin_env: checkout bin/ on PATH)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import CHECKOUT, bin_env


def env_for(root: Path, **extra: str) -> dict[str, str]:
    return bin_env(MACHINA_ROOT=str(root), **extra)


def run_shell(
    script: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``/bin/sh -c script``: pipes, redirections and ``ulimit`` included."""
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, input=stdin, text=True, capture_output=True, timeout=timeout, cwd=CHECKOUT
    )

"""Running the queue's shell tools as an operator's shell would: the checkout's bin/ first on PATH.

The environment is the test's own, which tests/conftest.py has already scrubbed of MACHINA_* settings.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def env_for(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, MACHINA_ROOT=str(root), MACHINA_ENV_FILE="/dev/null", **extra)
    env["PATH"] = f"{CHECKOUT / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def run_shell(
    script: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``/bin/sh -c script``: pipes, redirections and ``ulimit`` included."""
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, input=stdin, text=True, capture_output=True, timeout=timeout, cwd=CHECKOUT
    )

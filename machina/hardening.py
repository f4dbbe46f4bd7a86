"""What every daemon does to itself right after reading its configuration (defect D2 of issue 11).

* It becomes non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): another process of the same uid -- the policy
  driver, the embedding command, a tool in the no-bubblewrap fallback -- can then neither read
  ``/proc/<pid>/environ`` or ``/proc/<pid>/mem`` nor ptrace it, and no core file is written.  The flag is
  reset by execve(2), so every process that holds secrets and was started by exec (a job child) calls
  :func:`make_undumpable` itself.
* It removes the configuration's secrets (every variable declared ``secret=True``) from ``os.environ``:
  nothing it starts inherits them, whatever environment a spawning call forgets to clear.  The values stay
  in the loaded configuration, which is all the daemon reads from then on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

import prctl

from machina.config import Config, Source
from machina.config.variables import VARIABLES

log = logging.getLogger(__name__)

SECRET_NAMES = tuple(var.name for var in VARIABLES.values() if var.secret)


def make_undumpable() -> None:
    prctl.set_dumpable(False)


def scrub_secrets(environ: MutableMapping[str, str]) -> list[str]:
    """Remove every secret variable from ``environ``; the names removed."""
    removed = [name for name in SECRET_NAMES if name in environ]
    for name in removed:
        del environ[name]
    return removed


def harden_daemon(cfg: Config) -> None:
    """Non-dumpable, secrets out of the environment; warn about a secret in the shared env file."""
    make_undumpable()
    scrub_secrets(os.environ)
    for name in SECRET_NAMES:
        setting = cfg.setting(name)
        if setting.source is Source.FILE:
            log.warning(
                "%s is set in the shared env file (%s), which every unit reads: move it to the env file of the"
                " unit that needs it (see machina.env(5), SECRETS)",
                name,
                setting.origin,
            )

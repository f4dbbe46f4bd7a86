"""The profile table of OPERATIONS.md ("Profile system").

A profile only fills in values the operator did not set (the manual's ``setenv(overwrite=0)`` rule): the
environment and the env file always win.  ``dev`` is the set of plain defaults, plus the two Pulse Loop
budgets the manual gives per profile.
"""

from __future__ import annotations

PROFILES: dict[str, dict[str, str]] = {
    "dev": {
        "MACHINA_WAL_FSYNC": "0",
        "MACHINA_GENESIS_ENABLE": "1",
        "MACHINA_SECCOMP_ENABLE": "0",
        "MACHINA_GENESIS_GUARD": "0",
        "MACHINA_SHELL_TIMEOUT_MS": "30000",
        "MACHINA_POLICY_TIMEOUT_MS": "60000",
        "MACHINA_MAX_CYCLES": "100",
        "MACHINA_PULSE_BUDGET_S": "3600",
    },
    "prod": {
        "MACHINA_WAL_FSYNC": "1",
        "MACHINA_GENESIS_ENABLE": "0",
        "MACHINA_SECCOMP_ENABLE": "1",
        "MACHINA_GENESIS_GUARD": "1",
        "MACHINA_SHELL_TIMEOUT_MS": "10000",
        "MACHINA_POLICY_TIMEOUT_MS": "30000",
        "MACHINA_GENESIS_PROD_MODE": "1",
        "MACHINA_HTTP_DEFAULT_DENY": "1",
        "MACHINA_TOOLHOST_ISOLATE": "1",
        "MACHINA_MAX_CYCLES": "30",
        "MACHINA_PULSE_BUDGET_S": "600",
    },
}

#!/usr/bin/env python3
"""No plain-text bearer tokens or API keys in config files (read-only).

See `security_guardrails.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.secrets import security_guardrails

if __name__ == "__main__":
    run_main(security_guardrails, "security_guardrails")

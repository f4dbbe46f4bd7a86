#!/usr/bin/env python3
"""The ops set: detect, kill, start, restart, healthcheck (ops_*.sh call it).

See `ops.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.stack import ops

if __name__ == "__main__":
    run_main(ops, "ops")

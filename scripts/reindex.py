#!/usr/bin/env python3
"""Integrity of the JSONL memory streams (reindex --verify; repairs only with --apply).

See `reindex.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.memory import reindex

if __name__ == "__main__":
    run_main(reindex, "reindex")

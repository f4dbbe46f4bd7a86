#!/usr/bin/env python3
"""Archive large memory streams, then keep their tail (dry-run unless --apply).

See `work_memory_maintenance.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.memory import work_memory_maintenance

if __name__ == "__main__":
    run_main(work_memory_maintenance, "work_memory_maintenance")

#!/usr/bin/env python3
"""AID strings in code match the tool manifests (read-only).

See `validate_aid_refs.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.aidrefs import validate_aid_refs

if __name__ == "__main__":
    run_main(validate_aid_refs, "validate_aid_refs")

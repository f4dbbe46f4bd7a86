#!/usr/bin/env python3
"""AID strings in the docs match the tool manifests (read-only).

See `validate_docs_refs.py --help` and machina(7).
"""

import _bootstrap  # noqa: F401  (finds the machina package: see scripts/_bootstrap.py)

from machina.cli.common import run_main
from machina.ops.aidrefs import validate_docs_refs

if __name__ == "__main__":
    run_main(validate_docs_refs, "validate_docs_refs")

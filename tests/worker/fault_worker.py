"""machina-worker whose job children run fault_child.py (the faults a test's request asks for).

Same command line as machina-worker; only the child command differs, set in code as the queue's crash
points are: nothing in the environment can arm a fault in a real worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

from machina.worker import children

children.CHILD_COMMAND = [sys.executable, "-P", str(Path(__file__).with_name("fault_child.py"))]

if __name__ == "__main__":
    sys.argv[0] = "machina-worker"
    from machina.worker.main import main

    main()

"""Runs the real ``machina.up.supervisor.Supervisor`` over stand-in children described in a JSON file.

Usage: standin_suite.py SPEC.json RUNTIME_DIR.  SPEC.json is a list of ChildSpec fields.  Prints
``ALL READY`` on stdout when every child is ready; exits with the supervisor's exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from machina import log
from machina.backoff import Backoff
from machina.signals import ShutdownSignal
from machina.up.supervisor import ChildSpec, Supervisor


def main() -> int:
    spec_file, runtime_dir = sys.argv[1], sys.argv[2]
    with open(spec_file) as f:
        raw = json.load(f)
    specs = [
        ChildSpec(**{**s, "argv": tuple(s["argv"]), "probe": tuple(s["probe"]) if s.get("probe") else None})
        for s in raw["children"]
    ]
    log.setup("standin-suite", "debug")
    backoff = raw.get("backoff", {})
    supervisor = Supervisor(
        specs,
        runtime_dir,
        dict(os.environ),
        backoff=lambda: Backoff(**backoff),
        on_ready=lambda: print("ALL READY", flush=True),
    )
    with ShutdownSignal() as stop:
        code = supervisor.run(stop)
    logging.getLogger("standin-suite").info("supervisor returned %s", code)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

#!/bin/sh
# ops_detect: snapshot what of the suite runs, and who runs it (state/ops/pids.current.json).
# Options: `ops_detect.sh --help`; exit codes: machina(7).
exec "$(dirname "$0")/ops.py" detect "$@"

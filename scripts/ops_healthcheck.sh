#!/bin/sh
# ops_healthcheck: health of every component, written to state/ops/health.report.json (exit 69 when down).
# Options: `ops_healthcheck.sh --help`; exit codes: machina(7).
exec "$(dirname "$0")/ops.py" healthcheck "$@"

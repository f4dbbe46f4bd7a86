#!/bin/sh
# ops_restart: ops_kill, ops_start, ops_healthcheck (dry-run unless --apply; --dry-run accepted).
# Options: `ops_restart.sh --help`; exit codes: machina(7).
exec "$(dirname "$0")/ops.py" restart "$@"

#!/bin/sh
# ops_start: start the one standard stack: systemctl or machina up (dry-run unless --apply).
# Options: `ops_start.sh --help`; exit codes: machina(7).
exec "$(dirname "$0")/ops.py" start "$@"

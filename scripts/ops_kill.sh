#!/bin/sh
# ops_kill: stop the suite: SIGTERM, wait, SIGKILL, by pid file or systemctl (dry-run unless --apply).
# Options: `ops_kill.sh --help`; exit codes: machina(7).
exec "$(dirname "$0")/ops.py" kill "$@"

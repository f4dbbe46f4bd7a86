"""Starting a daemon from a test the way systemd's socket activation does: the listener on fd 3,
LISTEN_FDS=1, LISTEN_PID set to the daemon's own pid."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# An exec'd launcher rather than preexec_fn: a fork of a threaded process (pytest, with its servers' threads)
# can deadlock before exec, which once made a socket-activation test hang a whole run.  Python, not sh: dash
# cannot name an fd above 9.
_LAUNCHER = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3)\n"
    "if fd != 3: os.close(fd)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execvp(sys.argv[2], sys.argv[2:])"
)


def socket_activated(fd: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``argv`` with listener ``fd`` passed as systemd would; start it with
    ``pass_fds=(fd,)``."""
    return [sys.executable, "-c", _LAUNCHER, str(fd), *argv]

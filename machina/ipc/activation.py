"""systemd socket activation (sd_listen_fds(3)): adopt the listening sockets systemd passed us."""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3


def listen_sockets(environ: MutableMapping[str, str] | None = None, unset: bool = True) -> list[socket.socket]:
    """Sockets passed by systemd (LISTEN_FDS, LISTEN_PID), in order; empty when not socket-activated.

    The variables are removed afterwards (as sd_listen_fds(unset=1) does) so children do not adopt them.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not pid or not count or pid != str(os.getpid()):
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets

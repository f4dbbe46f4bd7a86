"""How the engine's commands reach machina-toolhost: the socket of the running toolhost.

``machina run`` and ``machina replay --strict`` never start a toolhost of their own and never run a tool
in process: they connect to the one the suite runs (systemd or ``machina up``), through
:class:`machina.toolhost.client.ToolhostClient`, the client every component uses.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from machina.exitcodes import ExitCode, MachinaError
from machina.toolhost.client import ToolhostClient

if TYPE_CHECKING:
    from machina.config import Config
    from machina.root import Root


def connect_toolhost(cfg: Config, root: Root, socket_path: str | None = None) -> ToolhostClient:
    """A client of the running toolhost (default socket ``<runtime dir>/toolhost.sock``); exit 69 if absent."""
    path = socket_path or root.socket_path("toolhost")
    if not os.path.exists(path):
        raise MachinaError(
            f"machina-toolhost is not running ({path} does not exist): start it, or the suite with `machina up`",
            ExitCode.UNAVAILABLE,
        )
    return ToolhostClient(path, cfg["MACHINA_TOOLHOST_TIMEOUT"])

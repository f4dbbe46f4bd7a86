"""How the engine's commands reach machina-toolhost: the socket of the running toolhost.

``connect_toolhost`` is the one place that names the client class.  Until ``machina.toolhost.client``
lands, :class:`SocketToolClient` speaks the toolhost wire protocol (see :mod:`machina.toolapi`) over
:class:`machina.ipc.jsonlines.JsonLineClient`; switching to ``ToolhostClient`` is the marked line below,
after which this class is deleted.  There is no in-process way to run a tool.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from machina.exitcodes import ExitCode, MachinaError
from machina.ipc.jsonlines import JsonLineClient
from machina.toolapi import ToolReply

if TYPE_CHECKING:
    from machina.config import Config
    from machina.engine.loop import JobToolClient
    from machina.root import Root


class SocketToolClient:
    """Interim ToolClient over the toolhost socket (replaced by machina.toolhost.client.ToolhostClient)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        self._client = JsonLineClient(socket_path, timeout)

    def call(
        self,
        aid: str,
        inputs: dict[str, Any],
        *,
        request_id: str | None = None,
        run_id: str | None = None,
        lease_token: str | None = None,
        idempotency_key: str | None = None,
        capabilities: dict[str, Any] | None = None,
    ) -> ToolReply:
        request: dict[str, Any] = {"aid": aid, "inputs": inputs, "request_id": request_id, "run_id": run_id}
        optional = {"lease_token": lease_token, "idempotency_key": idempotency_key, "capabilities": capabilities}
        request.update({k: v for k, v in optional.items() if v is not None})
        return ToolReply.from_wire(self._client.call(request))


def connect_toolhost(cfg: Config, root: Root, socket_path: str | None = None) -> JobToolClient:
    """A client of the running toolhost (default socket ``<runtime dir>/toolhost.sock``); exit 69 if absent."""
    path = socket_path or root.socket_path("toolhost")
    if not os.path.exists(path):
        raise MachinaError(
            f"machina-toolhost is not running ({path} does not exist): start it, or the suite with `machina up`",
            ExitCode.UNAVAILABLE,
        )
    return SocketToolClient(path, cfg["MACHINA_TOOLHOST_TIMEOUT"])  # switch: ToolhostClient(path, timeout)

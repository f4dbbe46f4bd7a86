"""A stand-in machina-toolhost process for shell-level tests: the toolhost wire protocol on a Unix socket,
answered by the ToolhostDouble.  Usage: python fake_toolhost.py SOCKET ROOT (runs until SIGTERM)."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from engine_support import ToolhostDouble

from machina.ipc.jsonlines import JsonLineServer, bind_unix


def main(socket_path: str, root: str) -> None:
    double = ToolhostDouble(root)

    def handle(request: dict[str, Any], peer: object) -> dict[str, Any]:
        reply = double.call(
            request["aid"],
            request.get("inputs") or {},
            request_id=request.get("request_id"),
            run_id=request.get("run_id"),
            idempotency_key=request.get("idempotency_key"),
            capabilities=request.get("capabilities"),
        )
        return reply.to_wire()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = JsonLineServer(bind_unix(socket_path, 0o600), handle, lambda peer: True, owned_path=socket_path)
    try:
        server.serve(stop, poll=0.05)
    finally:
        server.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

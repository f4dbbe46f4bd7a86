"""Client of machina-embed for the worker, the tools and the CLI (protocol: :mod:`machina.embed.service`).

    client = EmbedClient(Root(path).socket_path("embed"))
    vectors = client.embed(["scan the log for errors"])          # [[...]], unit norm, MACHINA_GPU_DIM long
    reply = client.select("scan the log", menu, top_k=3)         # {"picks": [...], "scores": {...}, ...}
    client.record_success("AID.ERROR_SCAN.v1", "scan the log")   # teach the tool's centroid

One connection, reused; safe to share between threads (calls are serialised).  A service that is not
running raises :class:`~machina.ipc.jsonlines.ServiceUnavailable` (exit 69); an error reply raises
:class:`EmbedError` with the service's ``status``.
"""

from __future__ import annotations

import threading
from typing import Any

from machina.exitcodes import ExitCode, MachinaError
from machina.ipc.jsonlines import JsonLineClient

_EXIT_BY_STATUS = {
    "bad_request": ExitCode.DATAERR,
    "forbidden": ExitCode.NOPERM,
    "io_error": ExitCode.IOERR,
}


class EmbedError(MachinaError):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"machina-embed: {message}", _EXIT_BY_STATUS.get(status, ExitCode.SOFTWARE))
        self.status = status


class EmbedClient:
    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn = JsonLineClient(socket_path, timeout=timeout)
        self._lock = threading.Lock()

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request; the reply without ``ok``, or EmbedError."""
        with self._lock:
            reply = self._conn.call(request)
        if reply.get("ok") is not True:
            raise EmbedError(str(reply.get("status", "error")), str(reply.get("error", "request failed")))
        reply.pop("ok")
        return reply

    def ping(self) -> dict[str, Any]:
        return self.call({"op": "ping"})

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-norm vector of MACHINA_GPU_DIM numbers per text, in order."""
        return list(self.call({"op": "embed", "texts": list(texts)})["embeddings"])

    def select(self, goal_text: str, menu: list[dict[str, Any]], top_k: int = 1) -> dict[str, Any]:
        """``{"picks": [{sid, aid, score}], "scores": {sid: score}, "below_floor": bool, "floor", ...}``."""
        return self.call({"op": "select", "goal": goal_text, "menu": menu, "top_k": top_k})

    def select_many(self, goal_texts: list[str], menu: list[dict[str, Any]], top_k: int = 1) -> list[dict[str, Any]]:
        """:meth:`select` for several goals against one menu, in one request."""
        return list(self.call({"op": "select", "goals": list(goal_texts), "menu": menu, "top_k": top_k})["results"])

    def record_success(self, aid: str, goal_text: str) -> int:
        """Add a successful run's goal to the tool's centroid (durable when this returns); its success count."""
        return int(self.call({"op": "success", "aid": aid, "goal": goal_text})["successes"])

    def stats(self) -> dict[str, Any]:
        return self.call({"op": "stats"})

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EmbedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""machina-embed: the embedding and tool-selection service on a Unix socket (JSON lines).

Protocol: one JSON object per line in, one per line out, answered in order on each connection.  Every
reply has ``ok``; a failed request has ``ok: false``, ``status`` and ``error`` and leaves the connection
open.  The peer is checked with SO_PEERCRED before a byte is read: its uid must be the service's own, root,
or one of MACHINA_EMBED_ALLOWED_UIDS (otherwise one ``forbidden`` reply and the connection is closed).

``{"op": "ping"}``
    -> ``{"ok": true, "service": "machina-embed", "provider": "hash"|"cmd", "dim": N, "backend": "numpy"|"cupy"}``
``{"op": "embed", "text": "..."}``  or  ``{"op": "embed", "texts": ["...", ...]}``
    -> ``{"ok": true, "embedding": [...]}`` or ``{"ok": true, "embeddings": [[...], ...]}``, with ``dim``,
    ``provider`` (the space the vectors are in) and ``fallback`` (true when the command failed and ``hash``
    answered).  Vectors have MACHINA_GPU_DIM numbers and unit L2 norm (a text with no words: all zeros).
``{"op": "select", "goal": "...", "menu": [{"sid", "aid", "name", "tags", "description"}, ...], "top_k": 1}``
    -> ``{"ok": true, "picks": [{"sid", "aid", "score"}, ...], "scores": {sid: score}, "below_floor": bool,
    "floor": F, "provider": ..., "fallback": bool}``.  Picks are best first, ties broken by menu order;
    ``below_floor`` is true when the best score is under MACHINA_EMBED_MIN_SCORE (or the menu is empty):
    the caller should then not use the pick.
``{"op": "select", "goals": ["...", ...], "menu": [...], "top_k": 1}``
    -> ``{"ok": true, "results": [<one select reply without "ok" per goal>, ...]}``: many goals against one
    menu in one matrix product.
``{"op": "success", "aid": "AID...", "goal": "..."}``
    -> ``{"ok": true, "aid": ..., "successes": N}`` once the goal is durably added to the tool's centroid.
``{"op": "stats"}``
    -> ``{"ok": true, "requests": {op: n}, "connections": n, "provider", "dim", "floor", "backend",
    "centroids_cached", "tools_with_history", "texts_embedded", "selections", "below_floor", "successes",
    "fallbacks", "command": {"runs", "ok", "failures": {reason: n}, "skipped", "breaker_open"}}`` (``command``
    only with ``cmd``; ``skipped`` counts requests answered by hash while the breaker was open).

Error statuses: ``bad_request`` (not JSON, not an object, unknown op, a missing or mistyped field, more than
MACHINA_EMBED_MAX_TEXTS texts or menu items, a line over 8 MiB), ``forbidden`` (peer uid not allowed),
``io_error`` (a success could not be written; nothing was recorded), ``internal_error`` (a bug; logged).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from machina.embed.engine import BadRequest, EmbedEngine, check_texts, parse_menu
from machina.fsutil import ensure_dir
from machina.ipc.jsonlines import JsonLineServer, ServerLimits, bind_unix
from machina.ipc.peercred import PeerCred
from machina.owned import sweep_temps

log = logging.getLogger(__name__)

OPS = ("ping", "embed", "select", "success", "stats")
VECTOR_DECIMALS = 8  # float32 carries about 7 significant digits; more only lengthens the reply
SOCKET_MODE = 0o660


class EmbedService:
    name = "machina-embed"

    def __init__(
        self,
        engine: EmbedEngine,
        socket_path: str,
        *,
        listener: Any = None,
        allowed_uids: Iterable[int] = (),
        socket_mode: int = SOCKET_MODE,
        limits: ServerLimits | None = None,
    ) -> None:
        self.limits = limits
        self.engine = engine
        self.socket_path = socket_path
        self.allowed_uids = frozenset({0, os.getuid(), *allowed_uids})
        self.socket_mode = socket_mode
        self._listener = listener  # a socket systemd passed us, or None to bind our own
        self._server: JsonLineServer | None = None
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()

    # --- lifecycle (machina.service.Service) -------------------------------------------------------------

    def start(self) -> None:
        owned = None
        if self._listener is None:
            ensure_dir(os.path.dirname(self.socket_path))
            sweep_temps(os.path.dirname(self.socket_path))  # a bind cut short by a SIGKILL
            self._listener = bind_unix(self.socket_path, self.socket_mode)
            owned = self.socket_path
        self._server = JsonLineServer(self._listener, self.handle, self.authorize, owned_path=owned, limits=self.limits)

    def serve(self, stop: threading.Event) -> None:
        assert self._server is not None, "start() first"
        self._server.serve(stop)

    def healthy(self) -> bool:
        return self._server is not None

    def status(self) -> str:
        where = self.socket_path if self._server and self._server.owned_path else "socket-activated"
        identity = " ".join(f"{k}={v}" for k, v in self._identity().items())
        return f"{identity} on {where}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    # --- protocol ----------------------------------------------------------------------------------------

    def authorize(self, peer: PeerCred) -> bool:
        return peer.uid in self.allowed_uids

    def handle(self, request: dict[str, Any], peer: PeerCred) -> dict[str, Any]:
        op = request.get("op")
        with self._lock:
            self._requests[op if op in OPS else "unknown"] += 1
        try:
            if op == "ping":
                return {"ok": True, "service": self.name, **self._identity()}
            if op == "embed":
                return self._embed(request)
            if op == "select":
                return self._select(request)
            if op == "success":
                return self._success(request)
            if op == "stats":
                return self._stats()
            raise BadRequest(f"unknown op {op!r}: expected one of {', '.join(OPS)}")
        except BadRequest as exc:
            return {"ok": False, "status": "bad_request", "error": str(exc)}

    @property
    def _max_texts(self) -> int:
        return self.engine.settings.max_texts

    def _identity(self) -> dict[str, Any]:
        return {"provider": self.engine.provider, "dim": self.engine.settings.dim, "backend": self.engine.xp.__name__}

    def _embed(self, request: dict[str, Any]) -> dict[str, Any]:
        has_text, has_texts = "text" in request, "texts" in request
        if has_text == has_texts:
            raise BadRequest("embed needs exactly one of 'text' (a string) or 'texts' (a list of strings)")
        if has_text:
            if not isinstance(request["text"], str):
                raise BadRequest("'text' must be a string")
            texts = [request["text"]]
        else:
            texts = check_texts(request["texts"], "'texts'", self._max_texts)
        vectors, space = self.engine.embed(texts)
        rows = np.round(vectors.astype(np.float64), VECTOR_DECIMALS).tolist()
        reply: dict[str, Any] = {"ok": True, "dim": self.engine.settings.dim, "provider": space}
        reply["fallback"] = space != self.engine.provider
        if has_text:
            reply["embedding"] = rows[0]
        else:
            reply["embeddings"] = rows
        return reply

    def _select(self, request: dict[str, Any]) -> dict[str, Any]:
        has_goal, has_goals = "goal" in request, "goals" in request
        if has_goal == has_goals:
            raise BadRequest("select needs exactly one of 'goal' (a string) or 'goals' (a list of strings)")
        if has_goal and not isinstance(request["goal"], str):
            raise BadRequest("'goal' must be a string")
        goals = [request["goal"]] if has_goal else check_texts(request["goals"], "'goals'", self._max_texts)
        top_k = request.get("top_k", 1)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise BadRequest("'top_k' must be an integer >= 1")
        menu = parse_menu(request.get("menu"), self._max_texts)
        results = self.engine.select_many(goals, menu, top_k)
        return {"ok": True, **results[0]} if has_goal else {"ok": True, "results": results}

    def _success(self, request: dict[str, Any]) -> dict[str, Any]:
        aid, goal = request.get("aid"), request.get("goal")
        if not isinstance(aid, str) or not aid:
            raise BadRequest("'aid' must be a non-empty string")
        if not isinstance(goal, str):
            raise BadRequest("'goal' must be a string")
        try:
            count = self.engine.record_success(aid, goal)
        except OSError as exc:
            log.error("cannot record success of %s: %s", aid, exc)
            return {"ok": False, "status": "io_error", "error": f"cannot record the success: {exc.strerror or exc}"}
        return {"ok": True, "aid": aid, "successes": count}

    def _stats(self) -> dict[str, Any]:
        with self._lock:
            requests = dict(self._requests)
        connections = self._server.connections_total if self._server else 0
        return {"ok": True, "requests": requests, "connections": connections, **self.engine.stats()}

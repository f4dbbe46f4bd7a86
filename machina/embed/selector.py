"""The ``GPU_CENTROID`` selector (MACHINA_SELECTOR) the goal engine plugs in: nearest tool centroid.

``choose`` returns the menu sid to run, or None when the engine should fall back to its HEURISTIC
selector: the best tool scored below MACHINA_EMBED_MIN_SCORE, the menu was empty, or machina-embed could
not answer (logged as a warning; a run never fails because the embedding service is down).
``record_success`` teaches a tool's centroid after a successful run, on the same best-effort terms.
"""

from __future__ import annotations

import logging
from typing import Any

from machina.embed.client import EmbedClient
from machina.exitcodes import MachinaError

log = logging.getLogger(__name__)


class CentroidSelector:
    name = "GPU_CENTROID"

    def __init__(self, client: EmbedClient) -> None:
        self.client = client

    @classmethod
    def from_config(cls, cfg: Any, timeout: float = 10.0) -> CentroidSelector:
        """A selector talking to the service at the configured root's ``embed`` socket."""
        from machina.root import open_root

        return cls(EmbedClient(open_root(cfg).socket_path("embed"), timeout=timeout))

    def choose(self, goal_text: str, menu: list[dict[str, Any]]) -> tuple[str | None, dict[str, float]]:
        """The chosen sid (or None: fall back to HEURISTIC) and every menu item's score by sid."""
        try:
            reply = self.client.select(goal_text, menu, top_k=1)
        except (MachinaError, OSError) as exc:
            log.warning("GPU_CENTROID selector unavailable, falling back: %s", exc)
            return None, {}
        scores = {str(sid): float(score) for sid, score in reply.get("scores", {}).items()}
        picks = reply.get("picks") or []
        if reply.get("below_floor") or not picks:
            log.info("GPU_CENTROID: best score below the floor %s, falling back", reply.get("floor"))
            return None, scores
        return str(picks[0]["sid"]), scores

    def record_success(self, aid: str, goal_text: str) -> None:
        try:
            self.client.record_success(aid, goal_text)
        except (MachinaError, OSError) as exc:
            log.warning("could not teach the centroid of %s: %s", aid, exc)

    def close(self) -> None:
        """Close the connection to machina-embed (a later call would open a new one)."""
        self.client.close()

"""Fallback selectors by MACHINA_SELECTOR name, built on demand.

``GPU_CENTROID`` is built from :class:`machina.embed.selector.CentroidSelector` (a client of machina-embed),
imported only when asked for.  Its ``choose(goal_text, menu) -> (sid | None, scores)`` picks among the
tools that can advance the goal now; ``None`` (below its similarity floor, or the service unreachable), or
a SID it was not offered, falls back to HEURISTIC for that step.  Its ``record_success(aid, goal_text)``
is the engine's success hook, so the centroids learn from every done run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from machina.engine import genesis_stages as genesis
from machina.engine.bindings import unmet
from machina.engine.completion import satisfies
from machina.engine.selectors import PICK, Selection, Selector, StepContext
from machina.engine.selectors.heuristic import HeuristicSelector
from machina.exitcodes import ExitCode, MachinaError

if TYPE_CHECKING:
    from machina.config import Config
    from machina.root import Root


class Chooses(Protocol):
    def choose(self, goal_text: str, menu: list[dict[str, Any]]) -> tuple[str | None, dict[str, float]]: ...


class CentroidAdapter:
    """Makes a similarity chooser a fallback selector that always answers."""

    name = "GPU_CENTROID"

    def __init__(self, chooser: Chooses, fallback: Selector | None = None) -> None:
        self.chooser = chooser
        self.fallback = fallback or HeuristicSelector()

    def select(self, ctx: StepContext) -> Selection:
        if genesis.applies(ctx.goal):  # a fixed pipeline of stages: nothing for similarity to choose
            return replace(self.fallback.select(ctx), by=self.fallback.name)
        pending = ctx.pending()
        offered = [
            e
            for e in ctx.menu.entries
            if any(satisfies(e.tool, r) for r in pending) and not unmet(ctx.goal, e.tool, ctx.state)
        ]
        if offered:
            menu = [{**e.public(), "description": e.tool.description} for e in offered]
            sid, _scores = self.chooser.choose(ctx.goal.text, menu)
            if any(e.sid == sid for e in offered):
                return Selection(PICK, sid, by=self.name)
        return replace(self.fallback.select(ctx), by=self.fallback.name)

    def record_success(self, aid: str, goal_text: str) -> None:
        """Teach the similarity chooser (when it learns) that ``aid`` served ``goal_text``."""
        learn = getattr(self.chooser, "record_success", None)
        if learn is not None:
            learn(aid, goal_text)

    def close(self) -> None:
        """Let go of what the chooser holds open (machina-embed's connection)."""
        close = getattr(self.chooser, "close", None)
        if close is not None:
            close()


def _heuristic(cfg: Config, root: Root) -> Selector:
    return HeuristicSelector()


def _gpu_centroid(cfg: Config, root: Root) -> Selector:
    try:
        from machina.embed.selector import CentroidSelector
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("machina.embed"):
            raise MachinaError(
                "MACHINA_SELECTOR=GPU_CENTROID needs machina.embed.selector, which this build does not have "
                "(use MACHINA_SELECTOR=HEURISTIC)",
                ExitCode.CONFIG,
            ) from None
        raise
    return CentroidAdapter(CentroidSelector.from_config(cfg))


SELECTORS: dict[str, Callable[[Config, Root], Selector]] = {
    "HEURISTIC": _heuristic,
    "GPU_CENTROID": _gpu_centroid,
}


def build_selector(cfg: Config, root: Root) -> Selector:
    """The fallback selector MACHINA_SELECTOR names."""
    return SELECTORS[cfg["MACHINA_SELECTOR"]](cfg, root)

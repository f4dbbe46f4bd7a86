"""``HEURISTIC``: deterministic tag rules.

Take the goal's unmet requirements in order; for the first one that some menu tool can satisfy and run now
(its required bindings resolve), pick that tool.  Among several tools for one requirement, prefer the one
sharing the most tags with the run's candidate tags, then the lowest AID.  When nothing on the menu can
advance the goal: ``NOOP``.
"""

from __future__ import annotations

from machina.engine.bindings import unmet
from machina.engine.completion import satisfies
from machina.engine.menu import MenuEntry
from machina.engine.selectors import NOOP, PICK, Selection, StepContext


class HeuristicSelector:
    name = "HEURISTIC"

    def select(self, ctx: StepContext) -> Selection:
        wanted = set(ctx.tags)
        for requirement in ctx.pending():
            candidates = [e for e in ctx.menu.entries if satisfies(e.tool, requirement)]
            candidates.sort(key=lambda e: (-len(wanted.intersection(e.tool.tags)), e.aid))
            ready = next((e for e in candidates if self._ready(ctx, e)), None)
            if ready is not None:
                return Selection(PICK, ready.sid)
        return Selection(NOOP)

    @staticmethod
    def _ready(ctx: StepContext, entry: MenuEntry) -> bool:
        return not unmet(ctx.goal, entry.tool, ctx.state)

"""``HEURISTIC``: deterministic tag rules.

Take the goal's unmet requirements in order; for the first one that some menu tool can satisfy and run now
(its required bindings resolve), pick that tool.  Among several tools for one requirement, prefer the one
sharing the most tags with the run's candidate tags, then the lowest AID.  When nothing on the menu can
advance the goal: ``NOOP``.

A Genesis run (goal.GENESIS*, :mod:`machina.engine.genesis_stages`) follows its stage first: a stage in
progress calls for its tool (COMPILE_SHARED after WRITE_FILE, LOAD_PLUGIN after that, then the loaded tool);
otherwise the requirements as above, leaving the Genesis tools and the tools found missing aside; then, if
a missing tool was met or the request brought a source, WRITE_FILE starts a plugin.
"""

from __future__ import annotations

from machina.engine import genesis_stages as genesis
from machina.engine.bindings import unmet
from machina.engine.completion import satisfies
from machina.engine.menu import MenuEntry
from machina.engine.selectors import NOOP, PICK, Selection, StepContext


class HeuristicSelector:
    name = "HEURISTIC"

    def select(self, ctx: StepContext) -> Selection:
        if genesis.applies(ctx.goal):
            return self._genesis(ctx)
        return self._by_requirements(ctx, skip=frozenset()) or Selection(NOOP)

    def _by_requirements(self, ctx: StepContext, skip: frozenset[str]) -> Selection | None:
        wanted = set(ctx.tags)
        for requirement in ctx.pending():
            candidates = [e for e in ctx.menu.entries if satisfies(e.tool, requirement) and e.aid not in skip]
            candidates.sort(key=lambda e: (-len(wanted.intersection(e.tool.tags)), e.aid))
            ready = next((e for e in candidates if self._ready(ctx, e)), None)
            if ready is not None:
                return Selection(PICK, ready.sid)
        return None

    def _genesis(self, ctx: StepContext) -> Selection:
        staged = genesis.stage_tool(ctx.state)
        if staged is not None:
            entry = ctx.menu.by_aid(staged)
            return Selection(PICK, entry.sid) if entry is not None else Selection(NOOP)
        picked = self._by_requirements(ctx, skip=frozenset(genesis.TOOLS) | ctx.missing)
        if picked is not None:
            return picked
        write = ctx.menu.by_aid(genesis.WRITE)
        if write is not None and genesis.wants_write(ctx.state, ctx.missing):
            return Selection(PICK, write.sid)
        return Selection(NOOP)

    @staticmethod
    def _ready(ctx: StepContext, entry: MenuEntry) -> bool:
        return not unmet(ctx.goal, entry.tool, ctx.state)

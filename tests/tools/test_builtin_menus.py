"""The built-in goals' menus hold the tools their bindings use and nothing new: a built-in tool sharing a
goal's candidate tag joins its menu, where a selector could pick it (FILE.DELETE in a file report)."""

from __future__ import annotations

from machina.manifests.goals import builtin_goalpack, read_goalpack
from machina.manifests.tools import builtin_toolpack, read_toolpack

# On a menu without being bound, as from the start: FILE.WRITE shares tag.file with FILE.READ, MEMORY.QUERY
# tag.memory with MEMORY.APPEND.  A Genesis goal's stages take their inputs from its stage slot, not bindings.
GENESIS_TOOLS = {f"AID.GENESIS.{step}.v1" for step in ("WRITE_FILE", "COMPILE_SHARED", "LOAD_PLUGIN")}
UNBOUND_BY_DESIGN = {
    "goal.FILE_REPORT.v1": {"AID.FILE.WRITE.v1"},
    "goal.MEMORY_NOTE.v1": {"AID.MEMORY.QUERY.v1"},
    "goal.GENESIS.v1": GENESIS_TOOLS,
    "goal.GENESIS.MISSING_TOOL.v1": GENESIS_TOOLS,
}


def test_every_builtin_goal_menu_is_its_bound_tools() -> None:
    tools = read_toolpack(builtin_toolpack())
    for goal in read_goalpack(builtin_goalpack()):
        menu = {t.aid for t in tools if set(goal.candidate_tags) & set(t.tags)}
        assert menu >= set(goal.bindings), goal.goal_id
        assert menu - set(goal.bindings) == UNBOUND_BY_DESIGN.get(goal.goal_id, set()), goal.goal_id

"""The tools and goals a run can use: the built-in packs (package data) and the root's operator packs.

Built-in packs are read from the installed package, never copied into MACHINA_ROOT, so an upgrade updates
them; operator packs live in ``<root>/toolpacks/<pack>/manifest.json`` and ``<root>/goalpacks/...``.  A
catalog is loaded once per worker and shared by its runs.  Loading refuses a goal that ``machina cts``
would flag, so a broken goalpack stops a worker at start instead of failing its jobs one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from machina.engine.cts import goal_problems
from machina.manifests.goals import GoalSpec, goalpack_manifests, load_goals
from machina.manifests.tools import ManifestError, ToolSpec, load_tools, toolpack_manifests
from machina.root import Root


@dataclass(frozen=True)
class Catalog:
    tools: dict[str, ToolSpec]
    goals: dict[str, GoalSpec]

    @classmethod
    def load(cls, root: Root | None = None) -> Catalog:
        tools = load_tools(toolpack_manifests(root.toolpacks if root else None))
        goals = load_goals(goalpack_manifests(root.goalpacks if root else None))
        problems = [p for goal in goals.values() for p in goal_problems(goal, tools)]
        if problems:
            raise ManifestError("; ".join(f"{p.source}: {p.code} {p.message}" for p in problems))
        return cls(tools, goals)

"""The menu of one run: the tools a selector may pick, each behind an opaque id (``SID0001``...).

A tool is on the menu when one of its tags is among the goal's candidate tags or the request's, and the
request's ``_capabilities`` allow its AID.  Entries are in AID order and numbered from SID0001, so the same
goal, tools and request always give the same menu (strict replay depends on it).  The menu is built once
per run: neither the tags nor the capabilities change during a run.  The one addition: a Genesis run that
loads a new tool gets it under the next SID (``Menu.extended``, logged as ``menu_extended``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from machina.audit.canonical import digest
from machina.engine.request import Capabilities
from machina.manifests.tools import ToolSpec

MAX_MENU = 9999  # SIDs have four digits
MENUS_KEPT = 64  # distinct (tags, capabilities) pairs one engine remembers the menu of


@dataclass(frozen=True)
class MenuEntry:
    sid: str
    tool: ToolSpec

    @property
    def aid(self) -> str:
        return self.tool.aid

    def public(self) -> dict[str, object]:
        """What a policy sees of the entry (DESIGN.md section 5)."""
        return {"sid": self.sid, "aid": self.aid, "name": self.tool.name, "tags": list(self.tool.tags)}


@dataclass(frozen=True)
class Menu:
    entries: tuple[MenuEntry, ...]
    refused: tuple[tuple[str, str], ...] = ()  # (aid, "blocked" | "not_allowed"): matched the tags only

    def by_sid(self, sid: str) -> MenuEntry | None:
        for entry in self.entries:
            if entry.sid == sid:
                return entry
        return None

    def by_aid(self, aid: str) -> MenuEntry | None:
        for entry in self.entries:
            if entry.aid == aid:
                return entry
        return None

    def extended(self, tool: ToolSpec) -> Menu:
        """This menu with ``tool`` added under the next SID (a tool a Genesis run made: see genesis_stages).
        The entries already there keep their SIDs."""
        if len(self.entries) >= MAX_MENU:
            return self
        return Menu((*self.entries, MenuEntry(sid(len(self.entries) + 1), tool)), self.refused)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def log_fields(self) -> dict[str, object]:
        listed = [{"sid": e.sid, "aid": e.aid} for e in self.entries]
        return {
            "entries": listed,
            "refused": [{"aid": aid, "why": why} for aid, why in self.refused],
            "menu_digest": digest(listed),
        }


def sid(index: int) -> str:
    return f"SID{index:04d}"


def build_menu(tools: Mapping[str, ToolSpec], tags: Iterable[str], capabilities: Capabilities) -> Menu:
    wanted = set(tags)
    entries: list[MenuEntry] = []
    refused: list[tuple[str, str]] = []
    for aid in sorted(tools):
        tool = tools[aid]
        if not wanted.intersection(tool.tags):
            continue
        why = capabilities.why_not(aid)
        if why is not None:
            refused.append((aid, why))
            continue
        if len(entries) == MAX_MENU:
            break
        entries.append(MenuEntry(sid(len(entries) + 1), tool))
    return Menu(tuple(entries), tuple(refused))


class Menus:
    """The menus one engine has built, by (tags, capabilities): a worker's runs of one goal all get the same
    menu, and building it walks every tool of the catalog (10-20 us of the 300-330 us an in-process no-op
    run costs).

    A menu depends only on the tools, the tags and the capabilities, and is immutable, so runs share it.
    A catalog's tools are not changed once loaded (:class:`~machina.engine.catalog.Catalog` is frozen); a
    different mapping of tools (a new catalog) empties the memory.  At most :data:`MENUS_KEPT` menus are
    kept: jobs that each name their own capabilities start it again instead of growing it."""

    def __init__(self, kept: int = MENUS_KEPT) -> None:
        self._kept = kept
        self._tools: Mapping[str, ToolSpec] | None = None
        self._menus: dict[tuple[tuple[str, ...], Capabilities], Menu] = {}

    def get(self, tools: Mapping[str, ToolSpec], tags: tuple[str, ...], capabilities: Capabilities) -> Menu:
        if tools is not self._tools:
            self._tools, self._menus = tools, {}
        key = (tags, capabilities)
        menu = self._menus.get(key)
        if menu is None:
            if len(self._menus) >= self._kept:
                self._menus.clear()
            menu = self._menus[key] = build_menu(tools, tags, capabilities)
        return menu

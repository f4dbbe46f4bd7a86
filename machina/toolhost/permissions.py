"""Permission modes and per-tool overrides: allow, ask or deny for each tool call.

The mode (MACHINA_PERMISSION_MODE) answers by tier (0 safe, 1 write, 2 system, 3 dangerous):

    mode         tier 0   tier 1   tier 2   tier 3
    open         allow    allow    allow    allow
    standard     allow    allow    ask      ask
    supervised   allow    ask      ask      ask
    locked       allow    deny     deny     deny

An override (MACHINA_PERMISSION_OVERRIDES, ``AID=allow|ask|deny`` with the AID exact, ending in ``*`` or
``*``) replaces the mode's answer for the tools it matches; when several match, deny beats ask beats allow.

"ask" never means yes: the call answers ``approval_required`` unless it presents a valid lease (a human's
approval, issued by an administrative peer).  Independently, MACHINA_LEASE_ENFORCE=1 makes every tier > 0
call need a lease even where the answer is allow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ALLOW, ASK, DENY = "allow", "ask", "deny"
STRICTNESS = {ALLOW: 0, ASK: 1, DENY: 2}
MODES: dict[str, tuple[str, str, str, str]] = {
    "open": (ALLOW, ALLOW, ALLOW, ALLOW),
    "standard": (ALLOW, ALLOW, ASK, ASK),
    "supervised": (ALLOW, ASK, ASK, ASK),
    "locked": (ALLOW, DENY, DENY, DENY),
}


def pattern_matches(pattern: str, aid: str) -> bool:
    """``*`` matches everything, ``AID.X.*`` is a prefix, anything else must be equal."""
    if pattern.endswith("*"):
        return aid.startswith(pattern[:-1])
    return aid == pattern


@dataclass(frozen=True)
class Permissions:
    mode: str
    overrides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_config(cls, mode: str, overrides: Iterable[str]) -> Permissions:
        pairs = []
        for item in overrides:
            pattern, _, decision = item.rpartition("=")
            pairs.append((pattern, decision))
        return cls(mode, tuple(pairs))

    def decide(self, aid: str, tier: int) -> str:
        matched = [decision for pattern, decision in self.overrides if pattern_matches(pattern, aid)]
        if matched:
            return max(matched, key=STRICTNESS.__getitem__)
        return MODES[self.mode][tier]

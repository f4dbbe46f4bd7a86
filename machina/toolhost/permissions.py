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

The one exception is :class:`AutonomicApproval`: a peer whose uid is listed in MACHINA_AUTONOMIC_UIDS (the
autonomic engine under its own uid) may have an "ask" answered by configuration instead of a human, for the
tools in MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS, or for every tool up to tier 2 with
MACHINA_AUTONOMIC_APPROVE_ALL_ASK=1.  Never tier 3, never a "deny", never a call from any other peer, and
never in place of the lease MACHINA_LEASE_ENFORCE=1 asks for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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


AUTO_APPROVE_MAX_TIER = 2  # tier 3 (dangerous) always needs a human


@dataclass(frozen=True)
class AutonomicApproval:
    """Which "ask" answers configuration may give for the autonomic peer (nothing unless configured)."""

    uids: frozenset[int] = frozenset()
    approve_all_ask: bool = False
    aids: tuple[str, ...] = field(default_factory=tuple)

    def approves(self, uid: int, aid: str, tier: int) -> bool:
        if uid not in self.uids or tier > AUTO_APPROVE_MAX_TIER:
            return False
        return self.approve_all_ask or any(pattern_matches(pattern, aid) for pattern in self.aids)

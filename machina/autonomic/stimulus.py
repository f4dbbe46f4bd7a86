"""RandomStimulus: when a burst has nothing left to do, poke one random safe tool (OPERATIONS.md "Intelligent
self-directed action replaces static random stimuli": the stimulus is the last resort, not the plan).

It fires only in a burst turn where no level is due and the self-question limit is reached (or no model is
there to ask), at most ``MAX_PER_BURST`` times per burst.  The candidates are tools the toolhost lists as tier 0,
answered "allow", that need no inputs: a stimulus exercises the tool path and records an experience, and can
never write, reach the network with chosen inputs, or ask for approval.
"""

from __future__ import annotations

import random
from typing import Any

MAX_PER_BURST = 3
NAME = "RS"


def candidates(catalog: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tier-0, allowed tools whose schema requires no input, sorted by AID (the draw is the only randomness)."""
    found = []
    for tool in catalog:
        schema = tool.get("inputs_schema") or {}
        if int(tool.get("tier", 3)) != 0 or tool.get("permission") != "allow" or schema.get("required"):
            continue
        found.append(tool)
    return sorted(found, key=lambda t: str(t["aid"]))


def pick(catalog: list[dict[str, Any]], rng: random.Random) -> dict[str, Any] | None:
    pool = candidates(catalog)
    return rng.choice(pool) if pool else None

"""The reward tracker (OPERATIONS.md "Reward Tracker", "Auto-Rollback"), measured per artifact.

The success rate of the newest 100 experiences is compared with the 100 before them; a drop of more than
5 points is a regression.  The culprit is the artifact (a skill, by the ``artifact`` field an experience
names) whose own success rate fell most between the two windows among those used in the newest one, so a
rollback removes what caused the drop, not whatever is newest (AGENT.md fault 12).  Experiences without
an artifact can raise the alert, but never make an artifact the culprit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WINDOW = 100
DROP_THRESHOLD = 0.05
MIN_ARTIFACT_USES = 3  # an artifact used once or twice in a window proves nothing


@dataclass(frozen=True)
class RewardCheck:
    regression: bool
    previous_rate: float | None
    current_rate: float | None
    culprit: str | None
    reason: str


def _rate(records: list[dict[str, Any]]) -> float | None:
    outcomes = [r["success"] for r in records if isinstance(r.get("success"), bool)]
    return sum(outcomes) / len(outcomes) if outcomes else None


def _by_artifact(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if isinstance(record.get("artifact"), str) and isinstance(record.get("success"), bool):
            groups.setdefault(record["artifact"], []).append(record)
    return groups


def check_reward(experiences: list[dict[str, Any]]) -> RewardCheck:
    """``experiences``: entries oldest first (as memory lines: the record under ``record``)."""
    records = [e.get("record") or {} for e in experiences]
    if len(records) < 2 * WINDOW:
        return RewardCheck(False, None, None, None, f"{len(records)} experience(s): two windows need {2 * WINDOW}")
    previous, current = records[-2 * WINDOW : -WINDOW], records[-WINDOW:]
    before, now = _rate(previous), _rate(current)
    if before is None or now is None or before - now <= DROP_THRESHOLD:
        return RewardCheck(False, before, now, None, "no drop over the threshold")
    culprit, worst = None, 0.0
    earlier = _by_artifact(previous)
    for artifact, uses in sorted(_by_artifact(current).items()):
        if len(uses) < MIN_ARTIFACT_USES:
            continue
        rate_now = _rate(uses) or 0.0
        baseline = _rate(earlier.get(artifact, [])) if artifact in earlier else before
        drop = (baseline if baseline is not None else before) - rate_now
        if drop > worst:
            culprit, worst = artifact, drop
    reason = f"success rate fell from {before:.0%} to {now:.0%}"
    return RewardCheck(True, before, now, culprit, reason + (f"; worst artifact {culprit}" if culprit else ""))

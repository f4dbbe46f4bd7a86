"""Run requests (DESIGN.md section 3): validated once, with JSON Schema, before a run starts.

Only ``goal_id`` is required.  Unknown top-level keys are kept (and ignored here); ``_queue`` belongs to the
queue.  ``_capabilities`` narrows which tools the run may use: ``allowed_tools`` and ``blocked_tools`` are
lists of AID patterns, each exact or ending in ``*`` (a prefix; ``*`` alone is every tool).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from machina.manifests.goals import GOAL_ID_PATTERN
from machina.manifests.plainschema import SchemaValidator
from machina.manifests.tools import TAG_PATTERN, describe
from machina.toolhost.permissions import pattern_matches  # the one AID-pattern rule (toolhost overrides too)

CAPABILITY_PATTERN = r"^(\*|AID\.[A-Za-z0-9_.]*\*?)$"


class ControlMode(enum.Enum):
    FALLBACK_ONLY = "FALLBACK_ONLY"  # the fallback selector only; the policy is never started
    BLENDED = "BLENDED"  # the policy, and the fallback when it fails or its breaker is open
    POLICY_ONLY = "POLICY_ONLY"  # the policy only: a failure is an invalid pick, an open breaker ends the run
    SHADOW_POLICY = "SHADOW_POLICY"  # ask the policy and log its choice, act on the fallback


_PATTERNS = {"type": "array", "items": {"type": "string", "pattern": CAPABILITY_PATTERN}, "maxItems": 1024}

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["goal_id"],
    "properties": {
        "goal_id": {"type": "string", "pattern": GOAL_ID_PATTERN},
        "inputs": {"type": "object"},
        "candidate_tags": {
            "type": "array",
            "items": {"type": "string", "pattern": TAG_PATTERN},
            "maxItems": 64,
        },
        "control_mode": {"enum": [m.value for m in ControlMode]},
        "request_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "_capabilities": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"allowed_tools": _PATTERNS, "blocked_tools": _PATTERNS},
        },
    },
}
_VALIDATOR = SchemaValidator(REQUEST_SCHEMA)


class RequestError(ValueError):
    """The request cannot be run as it is (a permanent failure: retrying will not help)."""


@dataclass(frozen=True)
class Capabilities:
    allowed: tuple[str, ...] | None = None  # None: every tool
    blocked: tuple[str, ...] = ()

    def allows(self, aid: str) -> bool:
        return self.why_not(aid) is None

    def why_not(self, aid: str) -> str | None:
        """Why ``aid`` is refused: blocked wins; without an allowed list every tool not blocked is allowed."""
        if any(pattern_matches(p, aid) for p in self.blocked):
            return "blocked"
        if self.allowed is not None and not any(pattern_matches(p, aid) for p in self.allowed):
            return "not_allowed"
        return None


@dataclass(frozen=True)
class RunRequest:
    goal_id: str
    inputs: dict[str, Any] = field(default_factory=dict)
    candidate_tags: tuple[str, ...] = ()
    control_mode: ControlMode | None = None  # None: the engine's default
    request_id: str | None = None
    capabilities: Capabilities = Capabilities()
    raw: Mapping[str, Any] = field(default_factory=dict)


def parse_request(raw: Any) -> RunRequest:
    """A RunRequest from a decoded JSON request; RequestError naming every problem otherwise."""
    if not _VALIDATOR.is_valid(raw):
        errors = sorted(_VALIDATOR.iter_errors(raw), key=lambda e: list(e.absolute_path))
        raise RequestError("; ".join(describe(e, "request") for e in errors))
    caps = raw.get("_capabilities", {})
    mode = raw.get("control_mode")
    return RunRequest(
        goal_id=raw["goal_id"],
        inputs=dict(raw.get("inputs", {})),
        candidate_tags=tuple(raw.get("candidate_tags", ())),
        control_mode=ControlMode(mode) if mode else None,
        request_id=raw.get("request_id"),
        capabilities=Capabilities(
            allowed=tuple(caps["allowed_tools"]) if "allowed_tools" in caps else None,
            blocked=tuple(caps.get("blocked_tools", ())),
        ),
        raw=raw,
    )

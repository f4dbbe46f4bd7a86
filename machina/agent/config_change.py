"""A model's ``config`` answer (chat driver contract): at most backend, model and temperature, and only
with a human's confirmation (AGENT.md fault 2: the earlier system let it set the permission mode, overrides,
endpoints and keys).

:func:`proposal_from` splits the answer into the changes that may be proposed (validated: a known backend,
a model name, a temperature in 0..2) and the refused rest, which is reported and never applied.  The
proposal is put to the human like an approval: only a timely :meth:`ConfigProposal.confirm` applies it;
no answer, a refusal or a late answer leaves every setting as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from machina.clock import Clock
from machina.config.variables import MODEL_PATTERN
from machina.llm.backend import BACKENDS

PROPOSABLE = ("backend", "model", "temperature")
MAX_TEMPERATURE = 2.0


@dataclass
class ConfigProposal:
    changes: dict[str, Any]  # the proposable changes, validated
    refused: list[str]  # what was asked for and will not be applied, with why
    clock: Clock = field(repr=False)
    timeout_s: float = 180.0
    asked_at: float = 0.0
    _confirmed_at: float | None = field(default=None, repr=False)
    _declined: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.asked_at = self.clock.monotonic()

    def seconds_left(self) -> float:
        return max(0.0, self.asked_at + self.timeout_s - self.clock.monotonic())

    def confirm(self) -> None:
        if self._confirmed_at is None and not self._declined:
            self._confirmed_at = self.clock.monotonic()

    def decline(self) -> None:
        if self._confirmed_at is None:
            self._declined = True

    def confirmed(self) -> bool:
        return self._confirmed_at is not None and self._confirmed_at <= self.asked_at + self.timeout_s

    def to_json(self) -> dict[str, Any]:
        return {"changes": self.changes, "refused": self.refused, "timeout_s": self.timeout_s}


def proposal_from(changes: list[dict[str, Any]], clock: Clock, timeout_s: float) -> ConfigProposal:
    allowed: dict[str, Any] = {}
    refused: list[str] = []
    for change in changes:
        key = str(change.get("key"))[:100]
        value: Any = change.get("value")
        problem = _problem(key, value)
        if problem:
            refused.append(f"{key}: {problem}")
        else:
            allowed[key] = float(value) if key == "temperature" else value
    return ConfigProposal(allowed, refused, clock, timeout_s)


def _problem(key: str, value: Any) -> str | None:
    if key not in PROPOSABLE:
        return "a model may only propose backend, model or temperature"
    if key == "backend" and value not in BACKENDS:
        return f"not a backend ({', '.join(BACKENDS)})"
    if key == "model" and not (isinstance(value, str) and len(value) <= 200 and re.fullmatch(MODEL_PATTERN, value)):
        return "not a model name"
    if key == "temperature" and (
        isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_TEMPERATURE
    ):
        return f"not a temperature between 0 and {MAX_TEMPERATURE:g}"
    return None

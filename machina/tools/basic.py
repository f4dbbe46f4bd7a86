"""AID.NOOP.v1 and AID.ASK_SUP.v1: the two tools that end a goal step without touching anything."""

from __future__ import annotations

from typing import Any


def noop(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {}


def ask_supervisor(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """The run stops here and waits for a human; the question travels in the output."""
    return {"ask_supervisor": True, "question": inputs.get("question", "")}

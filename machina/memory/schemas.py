"""JSON Schemas of the records inside the typed memory streams (AGENT.md section 6).

Each line of a typed stream is ``{"ts": ..., "record": {...}, ...}``; the schema applies to ``record``.
Required fields are the ones a reader (distillation, the autonomic levels, ``/graph_status``) relies on;
further fields are allowed, so a newer writer does not break an older reader.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jsonschema

_STR = {"type": "string"}
_STRS = {"type": "array", "items": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def _record(required: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **optional},
        "additionalProperties": True,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    "experiences": _record(
        {
            "user_request": _STR,
            "tool_used": {"type": ["string", "null"]},
            "success": {"type": "boolean"},
            "elapsed_sec": _SECONDS,
        },
        {
            "intent_type": _STR,
            "result_preview": _STR,
            "source": _STR,
            "difficulty": {"type": ["integer", "string"]},
        },
    ),
    "insights": _record(
        {"type": _STR},
        {
            "rules": {"type": "array"},
            "tool_stats": {"type": "object"},
            "importance": {"type": "number"},
            "quality_score": {"type": "number"},
        },
    ),
    "skills": _record(
        {"name": _STR, "lang": _STR, "code": _STR, "code_hash": _SHA256},
        {"tags": _STRS, "request": _STR, "source": _STR, "used_count": _COUNT, "success_count": _COUNT},
    ),
    "knowledge": _record(
        {"query": _STR, "summary": _STR},
        {"reason": _STR, "queries_tried": _STRS, "results_count": _COUNT, "sources": _STRS},
    ),
    "entities": _record(
        {"id": _STR, "name": _STR, "type": _STR},
        {"aliases": _STRS, "first_seen": _SECONDS, "last_seen": _SECONDS, "mention_count": _COUNT},
    ),
    "relations": _record(
        {"id": _STR, "source_id": _STR, "target_id": _STR, "predicate": _STR},
        {
            "weight": {"type": "number"},
            "first_seen": _SECONDS,
            "last_seen": _SECONDS,
            "mention_count": _COUNT,
        },
    ),
}

TYPED_STREAMS: tuple[str, ...] = tuple(SCHEMAS)


@cache
def _validator(stream: str) -> jsonschema.protocols.Validator:
    schema = SCHEMAS[stream]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def record_problem(stream: str, record: Any) -> str | None:
    """Why ``record`` does not fit ``stream``'s schema (the first problem, one line), or None."""
    if stream not in SCHEMAS:
        return None
    error = jsonschema.exceptions.best_match(_validator(stream).iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"record{('/' + where) if where else ''}: {error.message}"

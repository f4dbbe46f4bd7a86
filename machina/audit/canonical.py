"""Canonical JSON: the one byte form that digests, chain hashes and run-log lines are computed over.

Sorted keys, no insignificant whitespace, UTF-8, and no NaN or infinities (they have no JSON spelling, so
two implementations could not agree on them).  Python's float repr round-trips, so a canonical line parsed
and dumped again gives the same bytes: the verifier relies on that to reject lines edited by hand.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical(obj: Any) -> bytes:
    """``obj`` as canonical JSON bytes; ValueError for NaN/infinity, TypeError for non-JSON values."""
    return _ENCODER.encode(obj).encode()


def digest(obj: Any) -> str:
    """Hex SHA-256 of the canonical form: the digest of a request, a goal, a state or a tool's inputs."""
    return hashlib.sha256(canonical(obj)).hexdigest()


def copy_value(obj: Any) -> Any:
    """A deep copy of a JSON value: ``copy.deepcopy`` for what a run's state holds, in about half the time.

    Dicts, lists and tuples are rebuilt, strings, numbers, booleans and None are shared (they are
    immutable); anything else goes to ``copy.deepcopy``.  JSON values have no cycles, so no memo is kept.
    """
    kind = type(obj)
    if kind is dict:
        return {key: copy_value(value) for key, value in obj.items()}
    if kind is list:
        return [copy_value(value) for value in obj]
    if kind in _IMMUTABLE:
        return obj
    if kind is tuple:
        return tuple(copy_value(value) for value in obj)
    return copy.deepcopy(obj)


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def finite_float(text: str) -> float:
    """A JSON number as a float, refusing one too large to be finite (``1e400`` would read as infinity,
    which has no JSON spelling: accepted now, it could never be written back)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON refusing NaN/Infinity, numbers out of range and duplicate keys (input we did not write)."""
    return json.loads(text, parse_constant=_no_constants, parse_float=finite_float, object_pairs_hook=_no_duplicates)

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
from collections.abc import Callable
from typing import Any

import orjson

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
_ORJSON |= orjson.OPT_PASSTHROUGH_DATETIME
#: where orjson's bytes may not be json's: the floats under 1e-4 (orjson spells 1e-05 ``0.00001`` and 1e-07
#: ``1e-7``).  Seen anywhere, even inside a string, json encodes the value instead: a slower path, never
#: other bytes.  (``null`` is the third: see :func:`_non_finite`.)
_ORJSON_DIFFERS = (b"0.0000", b"e-")
_INFINITIES = (math.inf, -math.inf)


def canonical(obj: Any) -> bytes:
    """``obj`` as canonical JSON bytes; ValueError for NaN/infinity, TypeError for non-JSON values.

    The bytes are json's (``_ENCODER``), the definition the run logs already written were hashed over;
    orjson computes them in a fifth of the time where it gives the same (tests compare the two).  Enums
    and UUIDs, which json refuses, orjson writes as their values: no JSON value we build holds them.
    """
    return json_bytes(obj, _ORJSON, _ENCODER.encode)


def json_bytes(obj: Any, option: int, encode: Callable[[Any], str]) -> bytes:
    """``encode(obj)`` as UTF-8 (a json encoding with options matching orjson's ``option``), computed by
    orjson wherever orjson gives the same bytes; ``encode`` does the rest, and raises what it raises."""
    try:
        data = orjson.dumps(obj, option=option)
    except TypeError:  # big integers, non-str keys, subclasses, ...: json's rules, or its error
        return encode(obj).encode()
    for mark in _ORJSON_DIFFERS:
        if mark in data:
            return encode(obj).encode()
    if b"null" in data and _non_finite(obj):
        return encode(obj).encode()  # json writes NaN (or, with allow_nan=False, raises ValueError)
    return data


def _non_finite(value: Any) -> bool:
    """True when ``value`` holds a NaN or an infinity, which orjson writes as ``null`` and json refuses.

    Looked for only when the bytes hold a ``null``: most run-log events do (a field not set), and a walk
    of the value costs a third of encoding it again with json.  Only dicts, lists and tuples are walked:
    orjson refused every other container (a subclass included) before this is reached."""
    kind = type(value)
    if kind is dict:
        value = value.values()
    elif kind is float:
        return value != value or value in _INFINITIES
    elif kind is not list and kind is not tuple:
        return False
    for item in value:
        kind = type(item)
        if kind is float:
            if item != item or item in _INFINITIES:
                return True
        elif (kind is dict or kind is list or kind is tuple) and _non_finite(item):
            return True
    return False


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
    result = dict(pairs)  # in C; the loop below runs only for an object that has a duplicate
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


NOT_COMPACT = object()


def compact_value(data: bytes | bytearray) -> Any:
    """The value of ``data`` when ``data`` is exactly orjson's compact form of it (one trailing newline
    aside), else ``NOT_COMPACT``: the strict parsers' shortcut for what our own processes and most clients
    send (``loads_strict``: 12.7 us for a 470-byte toolhost request, this 6 us).

    Such text breaks none of the strict rules, and reads as the same value with either parser: a duplicate
    key would be written back one member shorter; NaN, ``Infinity`` and ``1e400`` orjson refuses; an
    integer beyond 64 bits it reads as a float and writes back in another spelling; a lone surrogate or
    invalid UTF-8 it refuses; both parsers round a number to the nearest double.  Everything else (spaces,
    escapes, a BOM, UTF-16) is written back differently and goes to the strict parser, as before."""
    body = data[:-1] if data.endswith(b"\n") else data
    try:
        value = orjson.loads(body)
        if orjson.dumps(value) == body:
            return value
    except (orjson.JSONDecodeError, TypeError):
        pass
    return NOT_COMPACT


#: made once: ``json.loads`` with hooks builds a decoder per call (the toolhost parses every request so)
_STRICT = json.JSONDecoder(parse_constant=_no_constants, parse_float=finite_float, object_pairs_hook=_no_duplicates)


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON refusing NaN/Infinity, numbers out of range and duplicate keys (input we did not write).

    Bytes are decoded as ``json.loads`` decodes them (UTF-8, -16 or -32, told by their first bytes)."""
    if isinstance(text, bytes | bytearray):
        value = compact_value(text)
        if value is not NOT_COMPACT:
            return value
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif not isinstance(text, str):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(text).__name__}")
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _STRICT.decode(text)

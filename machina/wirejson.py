"""JSON that Machina's processes write for one another: the worker's channel to its job children, the
JSON-lines sockets, WAL records, result envelopes and claim registries.

orjson (issue 16: the field's standard fast codec) encodes and decodes these in a tenth of the standard
library's time.  Where the two would not give the same *values*, the standard library does the work:

* ``dumps``: orjson refuses integers beyond 64 bits, keys that are not ``str``, and (with the passthrough
  options) subclasses of the JSON types, dataclasses and datetimes; each goes to ``json``, which encodes them
  as it always did (or raises ``TypeError`` as it always did).
* ``loads``: orjson reads an integer beyond 64 bits as a float, so any run of 19 digits or more in the input
  sends it to ``json`` (an integer that big always has one; a long digit run inside a string costs only
  the slower parser).  orjson is stricter than ``json`` elsewhere: it refuses ``NaN``/``Infinity``, a lone
  surrogate escape and invalid UTF-8, which none of our writers emit.

What is *not* here: canonical JSON (``machina.audit.canonical``: its bytes are what run-log chains hash, in
Python's float spelling), and parsing input that arrives from outside (``loads_strict``: duplicate keys
refused, which orjson cannot tell).  Values written with ``dumps`` were parsed strictly on the way in, so
they hold finite numbers only; orjson would write a NaN as ``null``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_SORTED = _OPTIONS | orjson.OPT_SORT_KEYS
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_COMPACT_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)
#: an integer orjson may not read exactly (it reads -2**63-1 as a float: 19 digits).  Looked for by mapping
#: every digit to ``0`` and every other byte to a space, then searching for 19 zeros: both steps run in C,
#: 3-8 times faster than ``re.search(rb"[0-9]{19}")``, which tries its pattern at every offset (1.3 us of a
#: 2 us WAL record's parse).  UTF-8 puts no other character's bytes in 0x30-0x39, so text is checked as its
#: UTF-8 bytes.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGITS = b"0" * 19


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON (no spaces, non-ASCII as is); TypeError for what JSON cannot hold."""
    try:
        return orjson.dumps(obj, option=_OPTIONS)
    except TypeError:
        return _COMPACT.encode(obj).encode()


def dumps_sorted(obj: Any) -> bytes:
    """As :func:`dumps`, keys sorted (by code point, as ``json`` sorts them)."""
    try:
        return orjson.dumps(obj, option=_SORTED)
    except TypeError:
        return _COMPACT_SORTED.encode(obj).encode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON one of our processes wrote; ValueError (a ``json.JSONDecodeError``, which orjson's error
    subclasses) when it is not JSON."""
    if isinstance(data, str):
        return _json_loads(data) if _has_long_digits(data.encode("utf-8", "surrogatepass")) else orjson.loads(data)
    raw = data if isinstance(data, bytes) else bytes(data)
    return _json_loads(raw) if _has_long_digits(raw) else orjson.loads(raw)


def _has_long_digits(raw: bytes) -> bool:
    return _LONG_DIGITS in raw.translate(_DIGITS_AS_ZEROS)


def _json_loads(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:  # orjson says ValueError past 1,024 levels; json runs out of stack
        raise json.JSONDecodeError("nested too deeply", data if isinstance(data, str) else "", 0) from None

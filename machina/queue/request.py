"""Run requests: the one validation both ``POST /enqueue`` and ``machina enqueue`` go through.

:func:`load_request` takes raw bytes (an HTTP body, a line of a file); :func:`validate_request` takes an
already-parsed object.  Both return a :class:`Request` carrying the canonical body (sorted keys, no
spaces, UTF-8: :func:`machina.audit.canonical.canonical`), its SHA-256 (what dedup compares) and the
``_queue`` settings; both raise :class:`~machina.queue.errors.InvalidRequest` with a reason a client can
act on.

Rules (DESIGN.md section 3): a JSON object; ``goal_id`` required, a string of letters, digits and
``_.:-`` (at most 128, starting with a letter or digit); ``control_mode`` one of the four modes;
``inputs`` an object; ``candidate_tags`` a list of strings; ``request_id`` 1..128 printable ASCII
characters without spaces; ``_capabilities`` ``{"allowed_tools": [...], "blocked_tools": [...]}`` with
patterns that are exact or end in one ``*``; ``_queue`` ``{"priority": 0..9999, "max_attempts": 1..1000,
"retry_min_ms": ms, "retry_max_ms": ms}``; ``_leases`` the leases an operator's approval put into the
job (:mod:`machina.approvals`: ``[{"aid", "inputs_digest", "token"}]``).  Keys starting with ``_system``
or ``_meta`` are reserved for the suite and rejected.  Other top-level keys are kept.  Duplicate keys, NaN
and Infinity are rejected (two parsers could read them differently), and so are numbers too large to be
finite (``1e400``).

Validation is written out by hand rather than with jsonschema: a compiled jsonschema validator costs about
80 us per request here, a third of the ingress budget at 4,000 requests/s.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from machina.approvals import LEASES_KEY, leases_error
from machina.audit.canonical import NOT_COMPACT, compact_value, finite_float
from machina.audit.canonical import canonical as canonical_bytes
from machina.queue.errors import InvalidRequest
from machina.queue.names import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN

CONTROL_MODES = ("FALLBACK_ONLY", "BLENDED", "POLICY_ONLY", "SHADOW_POLICY")
RESERVED_PREFIXES = ("_system", "_meta")
GOAL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
TOOL_PATTERN_RE = re.compile(r"[^*\s]{1,200}\*?|\*")
MAX_ATTEMPTS_LIMIT = 1000
MS_LIMIT = 7 * 24 * 3600 * 1000
_QUEUE_KEYS = {
    "priority": (PRIORITY_MIN, PRIORITY_MAX),
    "max_attempts": (1, MAX_ATTEMPTS_LIMIT),
    "retry_min_ms": (0, MS_LIMIT),
    "retry_max_ms": (0, MS_LIMIT),
}
_CAPABILITY_KEYS = ("allowed_tools", "blocked_tools")


@dataclass(frozen=True)
class QueueSettings:
    """Per-job ``_queue`` overrides; None means "use the configured default".  They live in the job's body,
    which is never rewritten, so they survive every retry."""

    priority: int | None = None
    max_attempts: int | None = None
    retry_min_ms: int | None = None
    retry_max_ms: int | None = None


@dataclass(frozen=True)
class Request:
    body: dict[str, Any]
    canonical: bytes
    sha256: str
    request_id: str | None
    settings: QueueSettings

    @property
    def goal_id(self) -> str:
        return str(self.body["goal_id"])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        dup = next(key for key, count in Counter(k for k, _ in pairs).items() if count > 1)
        raise InvalidRequest(f"duplicate key {dup!r}")
    return result


def _no_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    try:
        return finite_float(text)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


#: made once: ``json.loads`` with hooks builds a decoder per call, a third of a small request's parsing
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite)


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN/Infinity."""
    if isinstance(data, bytes | bytearray):
        value = compact_value(data)  # a compact body, as most clients send one: the same value, faster
        if value is not NOT_COMPACT:
            return value
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InvalidRequest("nested too deeply") from None


def load_request(data: bytes | str, request_id: str | None = None) -> Request:
    """Parse and validate raw bytes (an HTTP body, one line of a file)."""
    return validate_request(parse_json(data), request_id=request_id)


def validate_request(obj: Any, request_id: str | None = None) -> Request:
    """Check a parsed request; ``request_id`` (from a header or ``--request-id``) must match the body's, and
    is written into the body when the body has none, so the worker sees it."""
    if not isinstance(obj, dict):
        raise InvalidRequest(f"expected a JSON object, got {_json_type(obj)}")
    for key in obj:
        if key.startswith(RESERVED_PREFIXES):
            raise InvalidRequest(f"key {key!r} is reserved (keys starting with _system or _meta)")
    _check_goal_id(obj.get("goal_id"))
    _check_optional(obj)
    settings = _queue_settings(obj.get("_queue"))
    body_rid = obj.get("request_id")
    if body_rid is not None:
        _check_request_id(body_rid)
    if request_id is not None:
        _check_request_id(request_id)
        if body_rid is None:
            obj = {**obj, "request_id": request_id}
        elif body_rid != request_id:
            raise InvalidRequest("request_id given twice with different values")
    try:
        canonical = canonical_bytes(obj)
    except ValueError:  # a parsed object that never went through parse_json
        raise InvalidRequest("numbers must be finite (NaN and infinities are not JSON)") from None
    return Request(obj, canonical, hashlib.sha256(canonical).hexdigest(), obj.get("request_id"), settings)


def _json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(obj), type(obj).__name__
    )


def _check_goal_id(goal_id: Any) -> None:
    if goal_id is None:
        raise InvalidRequest("goal_id is required")
    if not isinstance(goal_id, str) or not GOAL_ID_RE.fullmatch(goal_id):
        raise InvalidRequest(
            "goal_id must be a string of letters, digits and _.:- (at most 128, starting with a letter or digit)"
        )


def _check_request_id(rid: Any) -> None:
    if not isinstance(rid, str) or not REQUEST_ID_RE.fullmatch(rid):
        raise InvalidRequest("request_id must be 1..128 printable ASCII characters without spaces")


def _check_optional(obj: dict[str, Any]) -> None:
    mode = obj.get("control_mode")
    if mode is not None and mode not in CONTROL_MODES:
        raise InvalidRequest(f"control_mode must be one of {', '.join(CONTROL_MODES)}")
    if "inputs" in obj and not isinstance(obj["inputs"], dict):
        raise InvalidRequest("inputs must be an object")
    tags = obj.get("candidate_tags")
    if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
        raise InvalidRequest("candidate_tags must be a list of strings")
    caps = obj.get("_capabilities")
    if caps is not None:
        _check_capabilities(caps)
    if LEASES_KEY in obj:
        problem = leases_error(obj[LEASES_KEY])
        if problem is not None:
            raise InvalidRequest(problem)


def _check_capabilities(caps: Any) -> None:
    if not isinstance(caps, dict):
        raise InvalidRequest("_capabilities must be an object")
    for key, patterns in caps.items():
        if key not in _CAPABILITY_KEYS:
            raise InvalidRequest(f"_capabilities: unknown key {key!r} (known: {', '.join(_CAPABILITY_KEYS)})")
        if not isinstance(patterns, list):
            raise InvalidRequest(f"_capabilities.{key} must be a list of tool patterns")
        for pattern in patterns:
            if not isinstance(pattern, str) or not TOOL_PATTERN_RE.fullmatch(pattern):
                raise InvalidRequest(
                    f"_capabilities.{key}: {pattern!r} is not a tool pattern (exact, or ending in one *)"
                )


def _queue_settings(raw: Any) -> QueueSettings:
    if raw is None:
        return QueueSettings()
    if not isinstance(raw, dict):
        raise InvalidRequest("_queue must be an object")
    values: dict[str, int] = {}
    for key, value in raw.items():
        bounds = _QUEUE_KEYS.get(key)
        if bounds is None:
            raise InvalidRequest(f"_queue: unknown key {key!r} (known: {', '.join(_QUEUE_KEYS)})")
        low, high = bounds
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidRequest(f"_queue.{key} must be an integer in {low}..{high}")
        values[key] = value
    settings = QueueSettings(**values)
    if (
        settings.retry_min_ms is not None
        and settings.retry_max_ms is not None
        and settings.retry_min_ms > settings.retry_max_ms
    ):
        raise InvalidRequest("_queue.retry_min_ms must not exceed _queue.retry_max_ms")
    return settings


def as_request(request: dict[str, Any] | Request, request_id: str | None) -> Request:
    """What every backend's enqueue takes: a validated request, or a raw one validated here."""
    if isinstance(request, Request):
        if request_id is not None and request_id != request.request_id:
            raise InvalidRequest("request_id given twice with different values")
        return request
    return validate_request(request, request_id=request_id)


def job_priority(req: Request, priority: int | None) -> int:
    """The caller's priority, else the request's own, else the default; InvalidRequest outside the range."""
    if priority is None:
        priority = req.settings.priority if req.settings.priority is not None else DEFAULT_PRIORITY
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidRequest(f"priority must be an integer in {PRIORITY_MIN}..{PRIORITY_MAX}")
    return priority

"""The plain part of JSON Schema, checked in plain Python before jsonschema is asked.

jsonschema's ``is_valid`` walks a schema keyword by keyword, building an evolved validator for every
subschema it enters: 16-27 us for a tool's small inputs_schema, and an ERROR_SCAN job is checked six
times on its way (the request, the goal's inputs and each tool's, in the job child and again in the
toolhost), about 130 us of a job's CPU.  The tools' and goals' schemas use a handful of keywords
(``type``, ``properties``, ``required``, ``additionalProperties``, lengths, bounds, ``pattern``,
``items``, string ``enum``): for those :func:`compile_check` builds one function per subschema.

The function answers one question: "is this instance certainly valid?"  ``True`` means jsonschema's
Draft 2020-12 validator accepts it; ``False`` means invalid *or not sure*, and the caller asks
jsonschema, which gives the verdict and the messages.  So a mistake here can cost time, never let through
what jsonschema refuses, and the rules are kept to the safe side:

- a value whose type is not exactly ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``
  (a subclass, a tuple) is "not sure": jsonschema's type tests use ``isinstance``;
- a float with an integral value is "not sure" for ``"integer"`` (jsonschema accepts ``1.0``);
- a schema with any other keyword jsonschema knows (``anyOf``, ``$ref``, ``format``, ...) or any ``$``
  keyword gets no function at all (:func:`compile_check` returns None): jsonschema does all of it.
  Keywords jsonschema does not know (``title``, ``description``, ...) are ignored, as jsonschema ignores
  them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

Check = Callable[[Any], bool]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
_JSON_TYPES = frozenset(t for types in _TYPES.values() for t in types)
_STRING_KEYS = ("minLength", "maxLength", "pattern")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_OBJECT_KEYS = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
_ARRAY_KEYS = ("items", "minItems", "maxItems")
_SUPPORTED = frozenset(("type", "enum", *_STRING_KEYS, *_NUMBER_KEYS, *_OBJECT_KEYS, *_ARRAY_KEYS))
_JSONSCHEMA_KEYWORDS = frozenset(jsonschema.Draft202012Validator.VALIDATORS)


class Unsupported(Exception):
    """The schema uses something this module leaves to jsonschema."""


def compile_check(schema: Any) -> Check | None:
    """A function telling which instances ``schema`` certainly accepts, or None when the schema uses a
    keyword this module leaves to jsonschema."""
    try:
        return _compile(schema)
    except (Unsupported, RecursionError):
        return None


class SchemaValidator:
    """jsonschema's Draft 2020-12 validator for one schema, with :func:`compile_check`'s function in front
    of ``is_valid``.  Immutable once built, so threads share it."""

    def __init__(self, schema: Any) -> None:
        self.full = jsonschema.Draft202012Validator(schema)
        self._certain = compile_check(schema)

    def is_valid(self, instance: Any) -> bool:
        certain = self._certain
        if certain is not None and certain(instance):
            return True
        return bool(self.full.is_valid(instance))

    def iter_errors(self, instance: Any) -> Any:
        return self.full.iter_errors(instance)


def _any(_value: Any) -> bool:
    return True


def _none(_value: Any) -> bool:
    return False


def _compile(schema: Any) -> Check:
    if schema is True:
        return _any
    if schema is False:
        return _none
    if type(schema) is not dict or not all(type(key) is str for key in schema):
        raise Unsupported("a schema that is not an object or a boolean")
    known = [key for key in schema if key.startswith("$") or key in _JSONSCHEMA_KEYWORDS]
    if any(key not in _SUPPORTED for key in known):
        raise Unsupported(f"keywords {sorted(set(known) - _SUPPORTED)}")
    if not known:
        return _any
    allowed = _allowed_types(schema)
    by_type: dict[type, Check] = {}
    for kind, keys, build in (
        (str, _STRING_KEYS, _string_check),
        (dict, _OBJECT_KEYS, _object_check),
        (list, _ARRAY_KEYS, _array_check),
    ):
        if kind in allowed and any(key in schema for key in keys):
            by_type[kind] = build(schema)
    if any(key in schema for key in _NUMBER_KEYS):
        numbers = _number_check(schema)
        by_type.update({kind: numbers for kind in (int, float) if kind in allowed})
    if "enum" in schema:
        return _enum_check(schema["enum"], allowed, by_type.get(str))
    return _node(allowed, by_type)


def _node(allowed: frozenset[type], by_type: Mapping[type, Check]) -> Check:
    def check(value: Any) -> bool:
        kind = type(value)
        if kind not in allowed:
            return False
        own = by_type.get(kind)
        return own is None or own(value)

    return check


def _allowed_types(schema: Mapping[str, Any]) -> frozenset[type]:
    if "type" not in schema:
        return _JSON_TYPES
    names = schema["type"]
    names = [names] if type(names) is str else names
    if type(names) is not list or not names or any(type(n) is not str or n not in _TYPES for n in names):
        raise Unsupported(f"type {names!r}")
    return frozenset(t for n in names for t in _TYPES[n])


def _enum_check(members: Any, allowed: frozenset[type], strings: Check | None) -> Check:
    # Only all-string enums: jsonschema's equality tells 1 from True and 1.0, which a set would not.
    if type(members) is not list or not all(type(m) is str for m in members) or str not in allowed:
        raise Unsupported("an enum of anything but strings")
    accepted = frozenset(members)

    def check(value: Any) -> bool:
        return type(value) is str and value in accepted and (strings is None or strings(value))

    return check


def _count(schema: Mapping[str, Any], key: str) -> int | None:
    """A length or size bound (None when absent); a float or a negative one is left to jsonschema."""
    if key not in schema:
        return None
    value = schema[key]
    if type(value) is not int or value < 0:
        raise Unsupported(f"{key} {value!r}")
    return value


def _bound(schema: Mapping[str, Any], key: str) -> int | float | None:
    value = schema.get(key)
    if value is not None and type(value) not in (int, float):
        raise Unsupported(f"{key} {value!r}")
    return value


def _string_check(schema: Mapping[str, Any]) -> Check:
    low, high = _count(schema, "minLength") or 0, _count(schema, "maxLength")
    search = None
    if "pattern" in schema:
        try:
            search = re.compile(schema["pattern"]).search  # jsonschema: re.search(pattern, instance)
        except (re.error, TypeError):
            raise Unsupported("a pattern Python's re does not compile") from None

    def check(value: str) -> bool:
        size = len(value)
        if size < low or (high is not None and size > high):
            return False
        return search is None or search(value) is not None

    return check


def _number_check(schema: Mapping[str, Any]) -> Check:
    low, high = _bound(schema, "minimum"), _bound(schema, "maximum")
    above, below = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")

    def check(value: int | float) -> bool:
        # Written as jsonschema writes each test (a NaN passes them all there, and here).
        if low is not None and value < low:
            return False
        if high is not None and value > high:
            return False
        if above is not None and value <= above:
            return False
        return below is None or value < below

    return check


def _object_check(schema: Mapping[str, Any]) -> Check:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if type(properties) is not dict or type(required) is not list or not all(type(k) is str for k in required):
        raise Unsupported("properties or required of an odd shape")
    checks = {key: _compile(sub) for key, sub in properties.items()}
    others: Check | None = _compile(schema.get("additionalProperties", True))
    others = None if others is _any else others
    fewest, most = _count(schema, "minProperties") or 0, _count(schema, "maxProperties")

    def check(value: dict[Any, Any]) -> bool:
        if len(value) < fewest or (most is not None and len(value) > most):
            return False
        for key in required:
            if key not in value:
                return False
        for key, item in value.items():
            own = checks.get(key) if type(key) is str else None
            if own is None:
                if key in checks:  # a key equal to a property's name without being a str
                    return False
                if others is not None and not others(item):
                    return False
            elif not own(item):
                return False
        return True

    return check


def _array_check(schema: Mapping[str, Any]) -> Check:
    each = _compile(schema.get("items", True))
    fewest, most = _count(schema, "minItems") or 0, _count(schema, "maxItems")

    def check(value: list[Any]) -> bool:
        if len(value) < fewest or (most is not None and len(value) > most):
            return False
        return each is _any or all(each(item) for item in value)

    return check

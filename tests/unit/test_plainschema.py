"""The plain-Python schema check against jsonschema itself: it may say "not sure", never "valid" wrongly."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from machina.engine.request import REQUEST_SCHEMA
from machina.manifests.goals import builtin_goalpack, load_goals
from machina.manifests.plainschema import SchemaValidator, compile_check
from machina.manifests.tools import builtin_toolpack, load_tools

PATTERNS = ["^a", "b$", "[0-9]{2}", "^$", "é"]
NAMES = ["a", "b", "path", "1"]


class Text(str):
    pass


class Record(dict):  # type: ignore[type-arg]
    pass


def _schemas() -> st.SearchStrategy[Any]:
    """Nested schemas of up to three of the keywords compile_check supports (and a title it must ignore)."""
    type_names = st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])
    counts = st.integers(0, 3)
    bounds = st.one_of(st.integers(-2, 2), st.floats(-2, 2, allow_nan=False))

    def node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        keywords: dict[str, st.SearchStrategy[Any]] = {
            "type": st.one_of(type_names, st.lists(type_names, min_size=1, max_size=3, unique=True)),
            "minLength": counts,
            "maxLength": counts,
            "pattern": st.sampled_from(PATTERNS),
            "minimum": bounds,
            "maximum": bounds,
            "exclusiveMinimum": bounds,
            "exclusiveMaximum": bounds,
            "properties": st.dictionaries(st.sampled_from(NAMES), children, max_size=3),
            "required": st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
            "additionalProperties": children,
            "minProperties": counts,
            "maxProperties": counts,
            "items": children,
            "minItems": counts,
            "maxItems": counts,
            "enum": st.lists(st.sampled_from(["a", "ab", "", "12"]), min_size=1),
            "title": st.just("ignored"),
        }
        chosen = st.lists(st.sampled_from(sorted(keywords)), min_size=1, max_size=3, unique=True)
        return chosen.flatmap(lambda names: st.fixed_dictionaries({name: keywords[name] for name in names}))

    return st.recursive(st.one_of(st.booleans(), st.just({})), node, max_leaves=5)


def _values(odd: bool) -> st.SearchStrategy[Any]:
    """JSON-like values; with ``odd``, also what jsonschema's isinstance tests see differently from exact
    types: subclasses, tuples, integral floats, NaN, non-str keys."""
    scalars = [
        st.none(),
        st.booleans(),
        st.integers(-5, 5),
        st.text(max_size=4),
        st.sampled_from(["a", "ab", "12", "é"]),
    ]
    if odd:
        scalars += [
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([1.0, -2.0, 0.0]),
            st.text(max_size=3).map(Text),
        ]
    keys = st.sampled_from([*NAMES, "zz"])

    def nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        shapes = [st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)]
        if odd:
            shapes += [
                st.lists(children, max_size=3).map(tuple),
                st.dictionaries(keys, children, max_size=3).map(Record),
                st.dictionaries(st.integers(0, 2), children, max_size=2),
            ]
        return st.one_of(*shapes)

    return st.one_of(*scalars, st.recursive(st.one_of(*scalars), nest, max_leaves=8))


#: One or two keywords each, and values that sit on each side of them: every keyword's own rule is met
#: by name, whatever the random search below happens to draw.
KEYWORD_SCHEMAS: list[Any] = [
    True,
    False,
    {},
    {"title": "only an annotation"},
    *({"type": name} for name in ("object", "array", "string", "integer", "number", "boolean", "null")),
    {"type": ["string", "null"]},
    {"minLength": 1},
    {"type": "string", "minLength": 2, "maxLength": 2},
    {"maxLength": 0},
    {"pattern": "^a"},
    {"type": "string", "pattern": "[0-9]{2}"},
    {"minimum": 0},
    {"maximum": 1.5},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2},
    {"type": "number", "minimum": -1, "maximum": 1},
    {"required": ["a"]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}},
    {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
    {"additionalProperties": {"type": "string"}},
    {"minProperties": 1, "maxProperties": 1},
    {"type": "array", "items": {"type": "integer"}},
    {"items": False},
    {"minItems": 1, "maxItems": 2},
    {"enum": ["a", "12"]},
    {"type": "string", "enum": ["a", "ab"], "maxLength": 1},
]
PLAIN_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 5, "", "a", "ab", "abc", "12", "é", "ba",
    [], [1], [1, 2, 3], ["a"], [1, "a"], {}, {"a": 1}, {"a": "x"}, {"b": "x"}, {"a": 1, "b": "x"},
    {"zz": None}, {"a": 1, "zz": "y"}, {"a": [1]},
]  # fmt: skip
ODD_VALUES: list[Any] = [
    1.0, 1.5, -0.5, 2.0, math.nan, math.inf, Text(""), Text("a"), Text("ab"), (1,), (), Record(), Record(a=1),
    {1: "x"}, {Text("a"): 1}, [1.0], {"a": 1.0}, {"a": Text("x")},
]  # fmt: skip


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=lambda s: json.dumps(s)[:60])
def test_each_keyword_against_values_on_both_sides(schema: Any) -> None:
    check = compile_check(schema)
    assert check is not None
    full = jsonschema.Draft202012Validator(schema)
    for value in PLAIN_VALUES:
        assert check(value) == full.is_valid(value), value
    for value in ODD_VALUES:
        assert not check(value) or full.is_valid(value), value
    assert any(full.is_valid(v) for v in PLAIN_VALUES) or schema is False  # the cases reach both answers
    assert not all(full.is_valid(v) for v in PLAIN_VALUES) or schema in (True, {}) or "title" in schema


@settings(max_examples=600, deadline=None)
@given(_schemas(), _values(odd=True))
def test_never_says_valid_where_jsonschema_says_invalid(schema: Any, value: Any) -> None:
    check = compile_check(schema)
    assume(check is not None)  # None only for a string enum under a type that excludes strings
    assert check is not None
    if check(value):
        assert jsonschema.Draft202012Validator(schema).is_valid(value), (schema, value)


@settings(max_examples=600, deadline=None)
@given(_schemas(), _values(odd=False))
def test_decides_every_plain_json_value_as_jsonschema_does(schema: Any, value: Any) -> None:
    # Without floats, subclasses or tuples there is nothing to be unsure about: the answers are the same,
    # so the fast path is taken wherever it can be.
    check = compile_check(schema)
    assume(check is not None)
    assert check is not None
    assert check(value) == jsonschema.Draft202012Validator(schema).is_valid(value), (schema, value)


@pytest.mark.parametrize(
    "schema",
    [
        {"anyOf": [{"type": "string"}]},
        {"$ref": "#/$defs/x", "$defs": {"x": {}}},
        {"type": "string", "format": "email"},
        {"type": "array", "uniqueItems": True},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"enum": [1, True]},
        {"const": "a"},
        {"properties": {"a": {"not": {}}}},
        {"type": "strin"},
        {"minLength": 1.0},
        {"pattern": "("},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"},
        {1: "not a keyword"},
        {"properties": {"a": {"required": "a"}}},
    ],
)
def test_leaves_other_keywords_and_odd_values_to_jsonschema(schema: dict[str, Any]) -> None:
    assert compile_check(schema) is None


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        ({"type": "integer"}, 1.0, True),  # jsonschema counts an integral float as an integer
        ({"type": "integer"}, True, False),
        ({"type": "string", "minLength": 1}, Text(""), False),
        ({"type": "object", "required": ["a"]}, Record(), False),
        ({"type": "array", "maxItems": 1}, (1, 2), False),  # a tuple is not an array
        ({"type": "number", "minimum": 0}, math.nan, True),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, None, True),
    ],
)
def test_the_validator_answers_as_jsonschema_where_the_check_is_unsure(schema: Any, value: Any, valid: bool) -> None:
    assert jsonschema.Draft202012Validator(schema).is_valid(value) is valid
    assert SchemaValidator(schema).is_valid(value) is valid


def test_the_schemas_on_a_jobs_path_are_checked_in_python() -> None:
    """Where the saving is: the request, ERROR_SCAN's goal and both its tools (and NOOP's)."""
    tools = load_tools([builtin_toolpack()])
    goals = load_goals([builtin_goalpack()])
    schemas = [REQUEST_SCHEMA, goals["goal.ERROR_SCAN.v1"].inputs_schema, goals["goal.NOOP.v1"].inputs_schema]
    schemas += [tools[aid].inputs_schema for aid in ("AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1", "AID.NOOP.v1")]
    assert all(compile_check(schema) is not None for schema in schemas), json.dumps(schemas)[:300]

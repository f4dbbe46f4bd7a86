"""machina.wirejson: orjson where it gives the values json gives, json where it would not."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machina import wirejson

COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)

# JSON values as our processes exchange them: any text (surrogates excluded: UTF-8 cannot carry them),
# integers of any size, finite floats.
TEXT = st.text(st.characters(exclude_categories=["Cs"]))
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner), max_leaves=30)
NO_FLOATS = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner),
    max_leaves=30,
)


@given(VALUES)
def test_a_value_reads_back_as_json_reads_it(value: object) -> None:
    assert wirejson.loads(wirejson.dumps(value)) == json.loads(COMPACT.encode(value))
    assert wirejson.loads(wirejson.dumps_sorted(value)) == json.loads(SORTED.encode(value))


@given(NO_FLOATS)
def test_the_bytes_are_json_s_where_no_float_is_involved(value: object) -> None:
    # floats are the one spelling that differs (orjson writes 1e-05 as 0.00001): the same number either way
    assert wirejson.dumps(value) == COMPACT.encode(value).encode()
    assert wirejson.dumps_sorted(value) == SORTED.encode(value).encode()


@given(VALUES)
def test_json_s_own_text_reads_the_same(value: object) -> None:
    text = COMPACT.encode(value)
    assert wirejson.loads(text) == json.loads(text)
    assert wirejson.loads(text.encode()) == json.loads(text)
    assert wirejson.loads(memoryview(text.encode())) == json.loads(text)


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, -(2**64), 10**40, -(10**40)],
)
def test_integers_beyond_64_bits_stay_exact(number: int) -> None:
    # orjson alone reads -2**63-1 as a float and refuses to write 2**64
    data = wirejson.dumps({"n": number, "list": [number]})
    assert data == COMPACT.encode({"n": number, "list": [number]}).encode()
    for form in (data, data.decode(), bytearray(data), memoryview(data)):
        back = wirejson.loads(form)
        assert back == {"n": number, "list": [number]}
        assert type(back["n"]) is int and type(back["list"][0]) is int


def test_what_orjson_refuses_to_write_is_written_as_json_writes_it() -> None:
    class Text(str):
        pass

    class Table(dict):  # type: ignore[type-arg]
        pass

    for value in ({1: "a", 2: "b"}, {Text("k"): Text("v")}, Table(b=1, a=2), [Text("x")]):
        assert wirejson.dumps(value) == COMPACT.encode(value).encode()
        assert wirejson.dumps_sorted(value) == SORTED.encode(value).encode()


def test_what_json_cannot_hold_is_a_type_error() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    for value in ({1, 2}, b"bytes", object(), Point(1), datetime.datetime(2026, 12, 6), {"a": {"b": {1, 2}}}):
        with pytest.raises(TypeError):
            wirejson.dumps(value)
        with pytest.raises(TypeError):
            wirejson.dumps_sorted(value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a":1', b"NaN", b"[Infinity]", b"1e400", b'"\\ud800"', b"\xff\xfe", b"[1]x", b"{'a':1}"],
)
def test_what_is_not_json_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        wirejson.loads(data)


def test_a_long_digit_run_inside_a_string_reads_right() -> None:
    value = {"id": "1234567890123456789012345", "n": 1.5}
    assert wirejson.loads(wirejson.dumps(value)) == value


@pytest.mark.parametrize("text", ["\u0661" * 25, "\ud800" + "9" * 18, "é" * 30])
def test_text_with_other_digits_and_lone_surrogates_reads_as_json_reads_it(text: str) -> None:
    # the long-digit check looks at UTF-8 bytes: Arabic-Indic digits, a lone surrogate beside 18 digits
    document = json.dumps({"t": text, "n": 12345678901234567890123}, ensure_ascii=False)
    assert wirejson.loads(document) == json.loads(document)


def test_sorted_keys_follow_code_points_as_json_sorts_them() -> None:
    value = {"b": 1, "B": 2, "é": 3, "\uffff": 4, "\U0001f600": 5, "": 6}
    assert wirejson.dumps_sorted(value) == SORTED.encode(value).encode()


def test_a_float_reads_back_to_the_same_number() -> None:
    for number in (1e-05, 4.8578219439683805e-08, 1e16, 1.5e300, 5e-324, -0.0, 0.1, 1796601517.665956):
        back = wirejson.loads(wirejson.dumps([number]))[0]
        assert back == number and math.copysign(1, back) == math.copysign(1, number)


@pytest.mark.parametrize("number", ["1", "1234567890123456789012"])
def test_nesting_too_deep_is_a_value_error_on_either_path(number: str) -> None:
    deep = "[" * 100_000 + number + "]" * 100_000
    with pytest.raises(ValueError):
        wirejson.loads(deep)
    with pytest.raises(ValueError):
        wirejson.loads(deep.encode())

"""canonical(): orjson computes it, and the bytes are still json's (what every run log was hashed over)."""

from __future__ import annotations

import hashlib
import json
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from machina.audit.canonical import canonical, digest, loads_strict
from machina.tools.report import _indented

JSON_S = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
JSON_C = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

TEXT = st.text(st.characters(exclude_categories=["Cs"]))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SMALL_FLOATS = st.floats(min_value=-1e-4, max_value=1e-4, allow_nan=False)  # where the spellings differ
SCALARS = st.none() | st.booleans() | st.integers() | FLOATS | SMALL_FLOATS | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner), max_leaves=40)


@given(VALUES)
def test_the_bytes_are_json_s(value: object) -> None:
    assert canonical(value) == JSON_S.encode(value).encode()


@pytest.mark.parametrize(
    "number", [1e-05, -1.4515088351312292e-05, 4.8578219439683805e-08, 1e-300, 5e-324, 1e16, 1.5e300, -0.0]
)
def test_floats_keep_python_s_spelling(number: float) -> None:
    # orjson alone writes 1e-05 as 0.00001 and 4.8e-08 as 4.8e-8
    assert canonical({"x": number}) == b'{"x":' + repr(number).encode() + b"}"


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_not_written_as_null(number: float) -> None:
    for value in (number, [number], {"a": {"b": number}}, {"a": None, "b": [1.0, number]}):
        with pytest.raises(ValueError):
            canonical(value)


def test_json_s_rules_hold_where_orjson_refuses() -> None:
    class Text(str):
        pass

    for value in ({"big": 2**64, "small": -(2**63) - 1}, {1: "a", 2: "b"}, {Text("k"): Text("v")}):
        assert canonical(value) == JSON_S.encode(value).encode()
    for value in ({1, 2}, b"x", object(), {"a": {1}}):
        with pytest.raises(TypeError):
            canonical(value)


def test_a_circular_value_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        canonical(loop)


def test_a_digest_is_of_json_s_bytes() -> None:
    value = {"b": [1, 2.5, None], "a": "é", "c": 1e-07}
    assert digest(value) == hashlib.sha256(JSON_S.encode(value).encode()).hexdigest()


@given(VALUES)
def test_loads_strict_reads_what_json_reads(value: object) -> None:
    text = JSON_S.encode(value)
    assert loads_strict(text) == json.loads(text)
    assert loads_strict(text.encode()) == json.loads(text)
    assert loads_strict(text.encode("utf-16")) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"a":1,"a":2}',
        '{"x":[{"b":1,"c":2,"b":3}]}',
        '{"a":{"":1,"":1}}',
        '{"a":1,"a":1}',  # the same member twice: orjson would read it as one
        '[{"a":[],"a":[]}]',
        "NaN",
        '{"a":Infinity}',
        "[-Infinity]",
        "[1e400]",
        "[1",
        "",
    ],
)
def test_loads_strict_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        loads_strict(text)
    with pytest.raises(ValueError):
        loads_strict(text.encode())


def _typed(value: object) -> str:
    return repr(value)  # 1 == 1.0 and 0.0 == -0.0: compare the values with their types and signs


@given(VALUES | st.lists(st.integers(min_value=-(2**70), max_value=2**70) | FLOATS))
def test_compact_bytes_read_as_json_reads_them(value: object) -> None:
    """The shortcut for orjson's own compact form gives json's value, type for type (a 70-bit integer
    included, which orjson alone would read as a float)."""
    try:
        data = orjson.dumps(value)
    except TypeError:  # beyond 64 bits: json writes it, and that is compact too
        data = JSON_C.encode(value).encode()
    assert _typed(loads_strict(data)) == _typed(json.loads(data))
    assert _typed(loads_strict(data + b"\n")) == _typed(json.loads(data))


def test_a_lone_surrogate_reads_as_json_reads_it() -> None:
    data = b'["\\ud800"]'
    assert loads_strict(data) == json.loads(data) == ["\ud800"]


def test_a_byte_order_mark_is_taken_as_json_takes_it() -> None:
    with pytest.raises(ValueError):
        loads_strict("\ufeff[1]")  # text: refused
    assert loads_strict("\ufeff[1]".encode()) == json.loads("\ufeff[1]".encode()) == [1]  # bytes: UTF-8-sig


def test_loads_strict_names_the_duplicate_key() -> None:
    with pytest.raises(ValueError, match="duplicate key 'b'"):
        loads_strict('{"a":1,"b":2,"c":3,"b":4}')


def test_loads_strict_takes_text_or_bytes_only() -> None:
    with pytest.raises(TypeError):
        loads_strict(123)  # type: ignore[arg-type]


ODD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e-07])
REPORT_VALUES = st.recursive(
    SCALARS | ODD_FLOATS, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner), max_leaves=30
)


@given(REPORT_VALUES)
def test_a_reports_json_block_is_the_standard_librarys_indented_form(value: object) -> None:
    """REPORT_SUMMARY writes its findings with orjson where the bytes are json's ``indent=2`` form."""
    assert _indented(value) == json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)

"""Request validation, job names and the FNV-1a suffix, retry delays."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machina.backoff import retry_delay_ms
from machina.queue import InvalidRequest, load_request, validate_request
from machina.queue.names import (
    JobRef,
    fnv1a32,
    new_ref,
    parse_file,
    parse_name,
    parse_result,
    parse_retry,
)

EXAMPLE = {
    "goal_id": "goal.ERROR_SCAN.v1",
    "inputs": {"input_path": "data/app.log", "pattern": "ERROR"},
    "candidate_tags": ["tag.log", "tag.error"],
    "control_mode": "FALLBACK_ONLY",
    "request_id": "client-chosen-id",
    "_capabilities": {"allowed_tools": ["AID.FILE.*"], "blocked_tools": []},
    "_queue": {"priority": 5000, "max_attempts": 5},
}


def test_design_example_is_valid() -> None:
    request = validate_request(EXAMPLE)
    assert request.request_id == "client-chosen-id"
    assert request.settings.priority == 5000 and request.settings.max_attempts == 5
    assert request.canonical == json.dumps(EXAMPLE, sort_keys=True, separators=(",", ":")).encode()
    assert request.sha256 == hashlib.sha256(request.canonical).hexdigest()


def test_unknown_top_level_keys_are_kept() -> None:
    assert validate_request({"goal_id": "g", "x_custom": [1, 2]}).body["x_custom"] == [1, 2]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("\ufeff".encode() + b'{"goal_id":"g"}', "Unexpected UTF-8 BOM"),
        (b'{"goal_id":"g","goal_id":"h"}', "duplicate key 'goal_id'"),
        (b'{"goal_id":"g","goal_id":"g"}', "duplicate key 'goal_id'"),  # compact, and one value twice
        (b'{"goal_id":"g","n":NaN}', "NaN is not valid JSON"),
        (b'{"goal_id":"g","n":Infinity}', "Infinity is not valid JSON"),
        (b'{"goal_id":"g","n":1e400}', "number 1e400 is out of range"),  # D9
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'"goal"', "got a string"),
        (b"null", "got null"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        load_request(raw)
    assert reason in caught.value.reason


def test_a_compact_body_keeps_an_integer_beyond_64_bits() -> None:
    body = load_request(b'{"goal_id":"goal.NOOP.v1","inputs":{"n":123456789012345678901234}}').body
    assert body["inputs"]["n"] == 123456789012345678901234


def test_request_id_argument_is_written_into_the_body() -> None:
    request = load_request(b'{"goal_id":"g"}', request_id="abc")
    assert request.body["request_id"] == "abc" and request.request_id == "abc"
    assert request.sha256 == load_request(b'{"request_id":"abc","goal_id":"g"}').sha256


def test_retry_bounds_must_be_ordered() -> None:
    with pytest.raises(InvalidRequest, match="retry_min_ms must not exceed"):
        validate_request({"goal_id": "g", "_queue": {"retry_min_ms": 10, "retry_max_ms": 5}})


def test_boolean_is_not_an_integer_setting() -> None:
    with pytest.raises(InvalidRequest, match=r"_queue\.priority"):
        validate_request({"goal_id": "g", "_queue": {"priority": True}})


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)],  # published FNV-1a test vectors
)
def test_fnv1a32_matches_the_reference_vectors(text: str, value: int) -> None:
    assert fnv1a32(text) == value


def test_names_round_trip() -> None:
    ref = new_ref(42, 1_700_000_000_123, seq=3, rand=0xABCDEF, request_id="r")
    assert ref.name == f"p0042_rq_1700000000123_0003abcdef_rid{fnv1a32('r'):08x}.json"
    assert parse_name(ref.name) == ref and parse_name(ref.stem) == ref
    assert parse_file(ref.file) == ref
    second = ref.next_attempt()
    assert second.file == ref.stem + ".a2.json" and parse_file(second.file) == second
    assert parse_retry(second.retry_file(1_700_000_005_000)) == (1_700_000_005_000, second)
    assert parse_result(ref.result_file(3)) == ref.with_attempt(3)


@pytest.mark.parametrize(
    "bad",
    [
        "../p5000_rq_1700000000000_0000000000.json",
        "p5000_rq_1_0000000000.json",
        "p5000_rq_1700000000000_00.json",
        "p5000_rq_1700000000000_0000000000.a1.json",
        "p5000_rq_1700000000000_0000000000.json/x",
        "x.json",
    ],
)
def test_non_names_do_not_parse(bad: str) -> None:
    assert parse_file(bad) is None and parse_name(bad) is None


@given(
    st.lists(
        st.tuples(st.integers(0, 9999), st.integers(1_000_000_000_000, 9_999_999_999_999), st.integers(0, 0xFFFF)),
        min_size=2,
        max_size=30,
    )
)
def test_name_order_is_priority_then_time_then_sequence(keys: list[tuple[int, int, int]]) -> None:
    refs = [new_ref(p, ms, seq, 0, None) for p, ms, seq in keys]
    by_name = sorted(refs, key=lambda r: r.file)
    assert [(r.priority, r.epoch_ms, r.rand) for r in by_name] == sorted((r.priority, r.epoch_ms, r.rand) for r in refs)


def test_jobref_later_attempts_keep_the_stem() -> None:
    ref = JobRef(5000, 1_700_000_000_000, "0000000000")
    assert {ref.with_attempt(n).stem for n in (1, 2, 30)} == {ref.stem}


# --- backoff -------------------------------------------------------------------------------------------


@given(
    attempt=st.integers(1, 200),
    min_ms=st.integers(0, 100_000),
    span=st.integers(0, 10_000_000),
    draw=st.floats(0.0, 1.0),
)
def test_retry_delay_stays_within_bounds(attempt: int, min_ms: int, span: int, draw: float) -> None:
    max_ms = min_ms + span
    delay = retry_delay_ms(attempt, min_ms, max_ms, lambda low, high: low + draw * (high - low))
    assert min_ms <= delay <= max_ms


@given(min_ms=st.integers(1, 10_000), factor=st.integers(1, 1000))
def test_retry_delay_grows_then_caps(min_ms: int, factor: int) -> None:
    max_ms = min_ms * factor
    lowest = [retry_delay_ms(n, min_ms, max_ms, lambda low, high: low) for n in range(1, 40)]
    highest = [retry_delay_ms(n, min_ms, max_ms, lambda low, high: high) for n in range(1, 40)]
    assert lowest == sorted(lowest) and highest == sorted(highest)
    assert highest[-1] == max_ms
    assert all(low >= high // 2 - 1 for low, high in zip(lowest, highest, strict=True))


def test_retry_delay_counts_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        retry_delay_ms(0, 1, 2)

"""Run logs: canonical lines, the hash chain with and without MACHINA_AUDIT_KEY, and tamper detection."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, TAMPERS, rewrite_chain
from hypothesis import given, settings
from hypothesis import strategies as st

from machina.audit.canonical import canonical, copy_value
from machina.audit.chain import GENESIS, Chain
from machina.audit.runlog import RunLogWriter
from machina.audit.verify import verify_log

KEY = "k3y-for-the-audit-chain"


@pytest.fixture
def log(make_engine) -> Path:
    return Path(make_engine().run(ERROR_SCAN).log_path)


@pytest.fixture
def keyed_log(make_engine) -> Path:
    return Path(make_engine(MACHINA_AUDIT_KEY=KEY).run(ERROR_SCAN).log_path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
# Keys on both sides of "chain_hash" and "chain_prev" in sort order, and next to them.
_keys = st.sampled_from(["", "a", "chain", "chain_g", "chain_hasi", "chain_i", "chain_prew", "event", "zz", "é"])


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(_keys | st.text(max_size=12), _json, max_size=8), keyed=st.booleans())
def test_a_line_sealed_in_one_pass_is_the_canonical_sealed_record(record: dict, keyed: bool) -> None:
    chain = Chain(KEY if keyed else None)
    record.pop("chain_prev", None)  # a writer never passes either
    record.pop("chain_hash", None)
    sealed, line = chain.seal_line("ab" * 32, record)
    assert sealed == chain.seal("ab" * 32, record)
    assert line == canonical(sealed)
    assert chain.check("ab" * 32, json.loads(line))


@settings(max_examples=200, deadline=None)
@given(value=_json)
def test_copy_value_is_an_equal_value_sharing_no_container(value: object) -> None:
    copied = copy_value(value)
    assert canonical(copied) == canonical(value)
    originals = {id(node) for node in _containers(value)}
    assert not originals & {id(node) for node in _containers(copied)}


def test_copy_value_copies_tuples_and_hands_other_objects_to_deepcopy() -> None:
    class Box:
        def __init__(self) -> None:
            self.items = [1]

    box = Box()
    value = {"t": (1, [2]), "box": box}
    copied = copy_value(value)
    assert copied["t"] == (1, [2]) and copied["t"][1] is not value["t"][1]
    assert copied["box"] is not box and copied["box"].items == [1] and copied["box"].items is not box.items


def _containers(value: object) -> list[object]:
    if isinstance(value, dict):
        return [value, *(node for item in value.values() for node in _containers(item))]
    if isinstance(value, (list, tuple)):
        return [value, *(node for item in value for node in _containers(item))]
    return []


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_lines_are_canonical_and_chained(log: Path) -> None:
    records = [json.loads(line) for line in lines(log)]
    assert records[0]["chain_prev"] == GENESIS
    for prev, record in itertools.pairwise(records):
        assert record["chain_prev"] == prev["chain_hash"]
    assert all(canonical(r) + b"\n" == raw for r, raw in zip(records, lines(log), strict=True))
    assert records[0]["chain_alg"] == "sha256" and records[0]["key_id"] is None
    assert verify_log(str(log)).ok


def test_keyed_log_verifies_only_with_its_key(keyed_log: Path) -> None:
    start = json.loads(lines(keyed_log)[0])
    assert start["chain_alg"] == "hmac-sha256" and start["key_id"] == Chain(KEY).key_id
    assert KEY not in keyed_log.read_text()
    assert verify_log(str(keyed_log), KEY).ok
    without = verify_log(str(keyed_log))
    assert without.problems == ["log is keyed (hmac-sha256): set MACHINA_AUDIT_KEY to verify it"]
    wrong = verify_log(str(keyed_log), "another-key")
    assert len(wrong.problems) == 1 and wrong.problems[0].startswith("wrong MACHINA_AUDIT_KEY")


def test_an_unkeyed_log_is_refused_when_a_key_is_set_unless_allowed(log: Path) -> None:
    assert "not keyed" in verify_log(str(log), KEY).problems[0]
    assert verify_log(str(log), KEY, allow_unkeyed=True).ok


@pytest.mark.parametrize("case", sorted(TAMPERS))
@pytest.mark.parametrize("keyed", [False, True])
def test_tampering_is_detected(make_engine, case: str, keyed: bool) -> None:
    key = KEY if keyed else None
    engine = make_engine(MACHINA_AUDIT_KEY=KEY) if keyed else make_engine()
    path = Path(engine.run(ERROR_SCAN).log_path)
    tamper, expected = TAMPERS[case]
    tamper(path)
    report = verify_log(str(path), key)
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


def test_rewriting_the_whole_chain_is_caught_only_by_the_key(make_engine) -> None:
    unkeyed = Path(make_engine().run(ERROR_SCAN).log_path)
    records = [json.loads(line) for line in lines(unkeyed)]
    records[3]["diff"][0]["value"]["matches"] = 0
    rewrite_chain(unkeyed, records)
    assert verify_log(str(unkeyed)).ok  # plain SHA-256 cannot stop a full rewrite: that is what the key is for

    keyed = Path(make_engine(MACHINA_AUDIT_KEY=KEY).run(ERROR_SCAN).log_path)
    records = [json.loads(line) for line in lines(keyed)]
    records[3]["diff"][0]["value"]["matches"] = 0
    rewrite_chain(keyed, records, key="attacker-guess")  # keeps the logged key_id, but cannot make the hashes
    assert any("chain hash mismatch" in p for p in verify_log(str(keyed), KEY).problems)
    for record in records:
        record.update(chain_alg="sha256", key_id=None)
    rewrite_chain(keyed, records)  # downgraded to plain SHA-256: refused while the key is configured
    assert "not keyed" in verify_log(str(keyed), KEY).problems[0]


def test_structure_checks_catch_a_forged_but_chained_log(make_engine) -> None:
    path = Path(make_engine().run(ERROR_SCAN).log_path)
    records = [json.loads(line) for line in lines(path)]
    records[3]["request_id"] = "someone-else"
    records[5]["state_before"] = "0" * 64
    rewrite_chain(path, records)
    problems = verify_log(str(path)).problems
    assert any("run_id/request_id differ" in p for p in problems)
    assert any("state_before does not follow" in p for p in problems)


def test_a_run_in_progress_is_told_apart_from_a_dead_one(tmp_path: Path) -> None:
    path = tmp_path / "run_x.jsonl"
    writer = RunLogWriter(str(path), run_id="x", request_id="r", chain=Chain(None))
    writer.emit("start", chain_alg="sha256", key_id=None, log_format=1, state_digest="s")
    report = verify_log(str(path))
    assert report.in_progress and report.problems == ["incomplete: run in progress (its writer holds the lock)"]
    assert verify_log(str(path), allow_incomplete=True).ok
    writer.close()
    report = verify_log(str(path))
    assert not report.in_progress and "process died" in report.problems[0]


def test_missing_and_empty_logs(tmp_path: Path) -> None:
    assert "cannot read" in verify_log(str(tmp_path / "nope.jsonl")).problems[0]
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert verify_log(str(tmp_path / "empty.jsonl")).problems == ["empty log"]

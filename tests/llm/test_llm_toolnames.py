"""The AID <-> function-name mapping: reversible, within [A-Za-z0-9_-]{1,64}, refusing what it cannot map."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from machina.llm import aid_to_function, function_to_aid


@pytest.mark.parametrize(
    ("aid", "name"),
    [
        ("AID.FILE.READ.v1", "FILE-READ-v1"),
        ("AID.ERROR_SCAN.v1", "ERROR_SCAN-v1"),
        ("AID.MCP.GITHUB.SEARCH_ISSUES.v1", "MCP-GITHUB-SEARCH_ISSUES-v1"),
        ("AID.NOOP", "NOOP"),
    ],
)
def test_documented_examples(aid: str, name: str) -> None:
    assert aid_to_function(aid) == name
    assert function_to_aid(name) == aid


PART = st.from_regex(r"[A-Za-z0-9_]{1,8}", fullmatch=True)


@given(st.lists(PART, min_size=1, max_size=6))
def test_round_trip(parts: list[str]) -> None:
    aid = "AID." + ".".join(parts)
    name = aid_to_function(aid)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name)
    assert function_to_aid(name) == aid


@pytest.mark.parametrize(
    "aid", ["FILE.READ.v1", "AID.", "AID.FILE..READ", "AID.FILE READ", "AID.A-B", "AID." + "X" * 65]
)
def test_aids_that_cannot_be_mapped_are_refused(aid: str) -> None:
    with pytest.raises(ValueError):
        aid_to_function(aid)


@pytest.mark.parametrize("name", ["", "a.b", "a--b", "-a", "a-", "rm -rf", "x" * 65])
def test_names_outside_the_mapping_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        function_to_aid(name)

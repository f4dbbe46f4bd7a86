"""The engine's parts on their own: capability filtering, menus, state transactions, the reply grammar,
the circuit breaker, and the selector registry."""

from __future__ import annotations

import base64
import contextlib
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machina.clock import FakeClock
from machina.engine import Catalog
from machina.engine.menu import Menus, build_menu
from machina.engine.request import RequestError, parse_request
from machina.engine.selectors import ASK_SUP, NOOP, PICK, Selection, StepContext
from machina.engine.selectors.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from machina.engine.selectors.grammar import ReplyError, ReservedKeyError, parse_reply
from machina.engine.selectors.heuristic import HeuristicSelector
from machina.engine.selectors.registry import CentroidAdapter, build_selector
from machina.engine.state import RunState
from machina.root import Root

CATALOG = Catalog.load()
TAGS = ("tag.file", "tag.log", "tag.report")  # FILE.READ, FILE.WRITE, ERROR_SCAN, REPORT_SUMMARY
ALL = ["AID.ERROR_SCAN.v1", "AID.FILE.READ.v1", "AID.FILE.WRITE.v1", "AID.REPORT_SUMMARY.v1"]


def menu_for(caps: dict | None) -> list[str]:
    raw = {"goal_id": "goal.ERROR_SCAN.v1", **({"_capabilities": caps} if caps is not None else {})}
    return [e.aid for e in build_menu(CATALOG.tools, TAGS, parse_request(raw).capabilities).entries]


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (None, ALL),
        ({}, ALL),
        ({"allowed_tools": ["*"]}, ALL),
        ({"allowed_tools": []}, []),
        ({"allowed_tools": ["AID.FILE.*"]}, ["AID.FILE.READ.v1", "AID.FILE.WRITE.v1"]),
        ({"allowed_tools": ["AID.FILE.READ.v1"]}, ["AID.FILE.READ.v1"]),
        ({"allowed_tools": ["AID.FILE.READ"]}, []),  # not exact, no star: no prefix match
        ({"allowed_tools": ["AID.FILE.READ.v1*"]}, ["AID.FILE.READ.v1"]),
        ({"allowed_tools": ["AID.*"], "blocked_tools": ["AID.FILE.WRITE.v1"]}, [a for a in ALL if "WRITE" not in a]),
        ({"allowed_tools": ["AID.FILE.*"], "blocked_tools": ["AID.FILE.*"]}, []),  # blocked wins
        ({"allowed_tools": ["AID.FILE.READ.v1"], "blocked_tools": ["AID.FILE.READ.v1"]}, []),
        ({"blocked_tools": ["*"]}, []),
        ({"blocked_tools": ["AID.FILE.*"]}, ["AID.ERROR_SCAN.v1", "AID.REPORT_SUMMARY.v1"]),
        ({"allowed_tools": ["AID.SHELL.EXEC.v1"]}, []),  # allowed but not tagged for the goal: never on the menu
    ],
)
def test_capability_filtering(caps: dict | None, expected: list[str]) -> None:
    assert menu_for(caps) == expected


@pytest.mark.parametrize(
    "caps",
    [
        {"allowed_tools": ["AID.*.v1"]},
        {"allowed_tools": ["file.*"]},
        {"allowed_tools": "AID.FILE.*"},
        {"blocked_tools": [7]},
        {"allowed_tools": ["*"], "extra": []},
        ["AID.FILE.*"],
    ],
)
def test_malformed_capabilities_are_refused(caps) -> None:
    with pytest.raises(RequestError, match="_capabilities"):
        parse_request({"goal_id": "goal.ERROR_SCAN.v1", "_capabilities": caps})


def test_sids_are_opaque_sequential_and_in_aid_order() -> None:
    menu = build_menu(CATALOG.tools, TAGS, parse_request({"goal_id": "goal.X.v1"}).capabilities)
    assert [e.sid for e in menu.entries] == ["SID0001", "SID0002", "SID0003", "SID0004"]
    assert menu.by_sid("SID0003").aid == "AID.FILE.WRITE.v1"
    assert menu.by_sid("SID0009") is None


def test_an_engine_builds_a_menu_once_per_tags_and_capabilities_and_again_for_a_new_catalog() -> None:
    menus, caps = Menus(kept=2), parse_request({"goal_id": "goal.X.v1"}).capabilities
    only_read = parse_request({"goal_id": "goal.X.v1", "_capabilities": {"allowed_tools": ["AID.FILE.READ.v1"]}})
    first = menus.get(CATALOG.tools, TAGS, caps)
    assert menus.get(CATALOG.tools, TAGS, caps) is first
    assert menus.get(CATALOG.tools, TAGS, only_read.capabilities).entries[0].aid == "AID.FILE.READ.v1"
    assert [e.aid for e in menus.get(CATALOG.tools, ("tag.log",), caps).entries] == ["AID.ERROR_SCAN.v1"]
    assert menus.get(CATALOG.tools, TAGS, caps) is not first  # a third pair with 2 kept: built again
    fewer = {aid: spec for aid, spec in CATALOG.tools.items() if aid != "AID.FILE.WRITE.v1"}
    assert [e.aid for e in menus.get(fewer, TAGS, caps).entries] == [a for a in ALL if "WRITE" not in a]


# --- state -----------------------------------------------------------------------------------------------


def test_commit_copies_on_write_and_leaves_the_old_state_alone() -> None:
    base = RunState.initial({"input_path": "a.log"})
    tx = base.begin()
    tx.set(("outputs", "AID.X.v1"), {"n": 1})
    new, diff = tx.commit()
    assert base.outputs == {} and new.outputs == {"AID.X.v1": {"n": 1}}
    assert new.inputs is base.inputs  # untouched branches are shared, not copied
    assert diff == [{"op": "add", "path": "/outputs/AID.X.v1", "value": {"n": 1}}]
    assert base.digest != new.digest
    again, diff = new.begin().commit()
    assert again.digest == new.digest and diff == []


def test_replace_and_escaped_paths_in_the_diff() -> None:
    state, _ = _with(RunState.initial({}), ("outputs", "a/b~c"), 1)
    _, diff = _with(state, ("outputs", "a/b~c"), 2)
    assert diff == [{"op": "replace", "path": "/outputs/a~1b~0c", "value": 2}]


def _with(state: RunState, tokens: tuple[str, ...], value: object) -> tuple[RunState, list]:
    tx = state.begin()
    tx.set(tokens, value)
    return tx.commit()


def test_rollback_and_an_exception_leave_no_trace() -> None:
    base = RunState.initial({})
    with pytest.raises(RuntimeError), base.begin() as tx:
        tx.set(("outputs", "AID.X.v1"), {"n": 1})
        raise RuntimeError("tool crashed")
    with pytest.raises(RuntimeError, match="finished"):
        tx.commit()
    assert base.outputs == {}


def test_values_the_log_cannot_hold_are_refused_at_once() -> None:
    tx = RunState.initial({}).begin()
    with pytest.raises(ValueError):
        tx.set(("outputs", "x"), {"v": math.nan})
    with pytest.raises(TypeError):
        tx.set(("outputs", "x"), {"v": object()})


def test_the_caller_cannot_change_a_committed_state_through_its_values() -> None:
    output = {"rows": [1, 2]}
    state, _ = _with(RunState.initial({}), ("outputs", "x"), output)
    digest = state.digest
    output["rows"].append(3)
    state.snapshot()["outputs"]["x"]["rows"].append(4)
    assert state.outputs["x"] == {"rows": [1, 2]} and RunState(state._data).digest == digest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(deadline=None)  # the machine is shared: time says nothing here
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c/d"]), json_values), max_size=6))
def test_transactions_match_plain_dict_updates(writes: list[tuple[str, object]]) -> None:
    base = RunState.initial({"k": 1})
    before = json.dumps(base.snapshot(), sort_keys=True)
    tx = base.begin()
    expected = base.snapshot()
    for key, value in writes:
        tx.set(("outputs", key), value)
        expected["outputs"][key] = value
    new, diff = tx.commit()
    assert new.snapshot() == expected
    assert json.dumps(base.snapshot(), sort_keys=True) == before
    assert len(diff) == len(writes)


# --- reply grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<PICK><SID0001><END>", Selection(PICK, "SID0001")),
        ("  <PICK><SID0042><END>\n", Selection(PICK, "SID0042")),
        (
            '<PICK><SID0002><INP>{"a": [1, {"b": "</INP>"}]}</INP><END>',
            Selection(PICK, "SID0002", {"a": [1, {"b": "</INP>"}]}),
        ),
        (
            "<PICK><SID0003><INP64>" + base64.b64encode(b'{"x": 1}').decode() + "</INP64><END>",
            Selection(PICK, "SID0003", {"x": 1}),
        ),
        ("<NOOP><END>", Selection(NOOP)),
        ("<ASK_SUP><END>\r\n", Selection(ASK_SUP)),
    ],
)
def test_replies_in_the_grammar(text: str, expected: Selection) -> None:
    assert parse_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<PICK><SID1><END>",
        "<PICK><SID00001><END>",
        "<PICK><SID\uff10\uff10\uff10\uff11><END>",  # fullwidth digits are not [0-9]
        "<pick><SID0001><END>",
        "<PICK><SID0001>",
        "<PICK><SID0001><END> trailing words",
        "Sure! <PICK><SID0001><END>",
        "<PICK><SID0001><END><PICK><SID0002><END>",
        "<PICK><SID0001><INP>[1, 2]</INP><END>",
        '<PICK><SID0001><INP>{"a": 1}}</INP><END>',
        '<PICK><SID0001><INP>{"a": 1, "a": 2}</INP><END>',
        '<PICK><SID0001><INP>{"a": NaN}</INP><END>',
        "<PICK><SID0001><INP64>not base64!</INP64><END>",
        "<PICK><SID0001><INP64>/w==</INP64><END>",  # not UTF-8
        "<PICK><SID0001><INP>" + "[" * 100000 + "</INP><END>",
        "<NOOP>",
        "<NOOP><END>\x00",
    ],
)
def test_replies_outside_the_grammar(text: str) -> None:
    with pytest.raises(ReplyError):
        parse_reply(text)


def test_reserved_keys_in_a_patch_are_their_own_error() -> None:
    with pytest.raises(ReservedKeyError, match="/list/0/_x"):
        parse_reply('<PICK><SID0001><INP>{"list": [{"_x": 1}]}</INP><END>')


@settings(deadline=None)  # the machine is shared: time says nothing here
@given(st.text(max_size=200))
def test_any_text_parses_or_raises_reply_error(text: str) -> None:
    with contextlib.suppress(ReplyError):
        parse_reply(text)


safe_keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
patch_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_keys, inner, max_size=3),
    max_leaves=10,
)


@settings(deadline=None)  # the machine is shared: time says nothing here
@given(st.dictionaries(safe_keys, patch_values, max_size=4))
def test_rendered_selections_parse_back(patch: dict) -> None:
    selection = Selection(PICK, "SID0007", patch)
    assert parse_reply(selection.render()) == selection


# --- breaker ---------------------------------------------------------------------------------------------


def test_breaker_states_with_a_fake_clock() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown_ms=5000, clock=clock)
    assert breaker.record_failure() is None and breaker.record_failure() is None
    assert breaker.record_success() is None and breaker.failures == 0  # a success resets the count
    assert [breaker.record_failure() for _ in range(3)] == [None, None, OPEN]
    assert breaker.state == OPEN and not breaker.allow()
    clock.advance(4.999)
    assert not breaker.allow()
    clock.advance(0.001)
    assert breaker.state == HALF_OPEN and breaker.allow()
    assert breaker.record_failure() == OPEN and not breaker.allow()
    clock.advance(5)
    assert breaker.record_success() == CLOSED and breaker.state == CLOSED


# --- selectors -------------------------------------------------------------------------------------------


def _ctx(state: RunState | None = None) -> StepContext:
    goal = CATALOG.goals["goal.ERROR_SCAN.v1"]
    menu = build_menu(CATALOG.tools, goal.candidate_tags, parse_request({"goal_id": goal.goal_id}).capabilities)
    from machina.engine.request import ControlMode

    return StepContext(
        goal,
        menu,
        state or RunState.initial({"input_path": "x"}),
        1,
        ControlMode.FALLBACK_ONLY,
        goal.candidate_tags,
        CATALOG.tools,
    )


def test_heuristic_follows_requirements_and_readiness() -> None:
    ctx = _ctx()
    assert HeuristicSelector().select(ctx) == Selection(PICK, "SID0001")  # the scan; the report is not ready
    scanned, _ = _with(ctx.state, ("outputs", "AID.ERROR_SCAN.v1"), {"matches": 0})
    assert HeuristicSelector().select(_ctx(scanned)) == Selection(PICK, "SID0002")


class _Similarity:
    """Stands in for machina.embed.selector.CentroidSelector (another part's interface)."""

    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.offered: list[list[str]] = []

    def choose(self, goal_text: str, menu: list[dict]) -> tuple[str | None, dict[str, float]]:
        self.offered.append([m["aid"] for m in menu])
        return self.answer, {m["sid"]: 0.5 for m in menu}


@pytest.mark.parametrize(
    ("answer", "by"),
    [
        ("SID0001", "GPU_CENTROID"),
        (None, "HEURISTIC"),  # below the similarity floor: the heuristic decides
        ("SID0002", "HEURISTIC"),  # the report: not offered (not ready), so ignored
        ("SID0042", "HEURISTIC"),  # not on the menu at all: ignored
    ],
)
def test_centroid_adapter_offers_only_ready_tools_and_falls_back(answer, by) -> None:
    similarity = _Similarity(answer)
    selection = CentroidAdapter(similarity).select(_ctx())
    assert (selection, selection.by) == (Selection(PICK, "SID0001"), by)
    assert similarity.offered == [["AID.ERROR_SCAN.v1"]]


def test_selector_default_is_heuristic(tmp_path) -> None:
    from machina import config

    cfg = config.load(environ={"MACHINA_ENV_FILE": "/dev/null"})
    assert build_selector(cfg, Root(str(tmp_path))).name == "HEURISTIC"

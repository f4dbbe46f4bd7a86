"""Goal manifests and ``machina cts``: the shipped packs are clean, each problem has its stable code."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from engine_support import operator_goalpack

from machina.engine import Catalog
from machina.engine.cts import DESCRIPTIONS, lint
from machina.manifests.goals import PointerError, builtin_goalpack, load_goals, parse_pointer
from machina.manifests.tools import ManifestError, builtin_toolpack
from machina.root import Root

GOOD = {
    "goal_id": "goal.GOOD.v1",
    "name": "good",
    "candidate_tags": ["tag.log", "tag.report"],
    "inputs_schema": {"type": "object", "properties": {"input_path": {"type": "string"}}},
    "complete_when": {"all_ok": ["AID.ERROR_SCAN.v1", "tag.report"]},
    "bindings": {
        "AID.ERROR_SCAN.v1": {"input_path": {"ptr": "/inputs/input_path", "required": True}},
        "AID.REPORT_SUMMARY.v1": {"findings": {"ptr": "/outputs/AID.ERROR_SCAN.v1", "required": True}},
    },
}


def goal(**changes: object) -> dict:
    result = copy.deepcopy(GOOD)
    result.update(changes)
    return result


def write(tmp_path: Path, doc: object, name: str = "manifest.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def codes(tmp_path: Path, *goals: dict) -> list[str]:
    path = write(tmp_path, {"pack": "t", "goals": list(goals)})
    return [p.code for p in lint([path])]


def test_shipped_packs_are_clean() -> None:
    assert lint([builtin_toolpack(), builtin_goalpack()]) == []
    assert set(Catalog.load().goals) >= {"goal.ERROR_SCAN.v1", "goal.NOOP.v1"}


def test_the_good_fixture_is_clean(tmp_path: Path) -> None:
    assert codes(tmp_path, GOOD) == []


BROKEN = {
    "CTS002": goal(candidate_tags=[]),
    "CTS202": goal(inputs_schema={"type": "no-such-type"}),
    "CTS203": goal(bindings={"AID.ERROR_SCAN.v1": {"input_path": {"ptr": "/inputs/a~2b"}}}),
    "CTS204": goal(complete_when={"all_ok": ["AID.NOPE.v1"]}),
    "CTS205": goal(complete_when={"all_ok": ["AID.FILE.READ.v1"]}),
    "CTS206": goal(bindings={**GOOD["bindings"], "AID.NOPE.v1": {}}),
    "CTS207": goal(bindings={**GOOD["bindings"], "AID.FILE.READ.v1": {"path": {"value": "x"}}}),
    "CTS208": goal(
        bindings={"AID.ERROR_SCAN.v1": {"input_path": {"ptr": "/inputs/input_path"}, "colour": {"value": 1}}}
    ),
    "CTS209": goal(bindings={"AID.ERROR_SCAN.v1": {"input_path": {"ptr": "/inputs/logfile"}}}),
    "CTS210": goal(
        bindings={
            **GOOD["bindings"],
            "AID.REPORT_SUMMARY.v1": {"findings": {"ptr": "/outputs/AID.FILE.READ.v1", "required": True}},
        }
    ),
    "CTS211": goal(bindings={"AID.ERROR_SCAN.v1": {"pattern": {"value": "ERROR"}}}),
    "CTS212": goal(
        bindings={
            "AID.ERROR_SCAN.v1": {
                "input_path": {"ptr": "/inputs/input_path"},
                "pattern": {"ptr": "/outputs/AID.REPORT_SUMMARY.v1/pattern", "required": True},
            },
            "AID.REPORT_SUMMARY.v1": {"findings": {"ptr": "/outputs/AID.ERROR_SCAN.v1", "required": True}},
        }
    ),
    "CTS213": goal(
        bindings={
            "AID.ERROR_SCAN.v1": {"input_path": {"ptr": "/inputs/input_path"}, "max_rows": {"value": -5}},
        }
    ),
}


@pytest.mark.parametrize("code", sorted(BROKEN))
def test_each_problem_has_its_code(tmp_path: Path, code: str) -> None:
    assert set(codes(tmp_path, BROKEN[code])) == {code}
    assert code in DESCRIPTIONS


def test_file_level_codes(tmp_path: Path) -> None:
    not_json = write(tmp_path, "{nope", "a.json")
    neither = write(tmp_path, {"pack": "x"}, "b.json")
    bad_tools = write(tmp_path, {"pack": "x", "tools": [{"aid": "nope"}]}, "c.json")
    bad_schema = {
        "aid": "AID.X.v1",
        "name": "x",
        "tags": ["tag.x"],
        "side_effects": ["none"],
        "deterministic": True,
        "inputs_schema": {"type": 5},
    }
    bad_out = {**bad_schema, "aid": "AID.Y.v1", "inputs_schema": {}, "outputs_schema": {"type": 5}}
    schemas = write(tmp_path, {"pack": "x", "tools": [bad_schema, bad_out]}, "d.json")
    dupe = write(tmp_path, {"pack": "x", "tools": [{**bad_out, "aid": "AID.NOOP.v1", "outputs_schema": {}}]}, "e.json")
    dupe_goals = write(tmp_path, {"pack": "g", "goals": [GOOD, GOOD]}, "f.json")
    found = {(Path(p.source).name, p.code) for p in lint([not_json, neither, bad_tools, schemas, dupe, dupe_goals])}
    assert found == {
        ("a.json", "CTS001"),
        ("b.json", "CTS003"),
        ("c.json", "CTS002"),
        ("d.json", "CTS101"),
        ("d.json", "CTS102"),
        ("e.json", "CTS103"),
        ("f.json", "CTS201"),
    }


def test_problem_lines_name_file_code_and_goal(tmp_path: Path) -> None:
    path = write(tmp_path, {"pack": "t", "goals": [BROKEN["CTS204"]]})
    assert [str(p) for p in lint([path])] == [
        f"{path}: CTS204 goal.GOOD.v1: complete_when: AID.NOPE.v1: no tool is or carries it"
    ]


def test_goals_are_checked_against_given_toolpacks(tmp_path: Path) -> None:
    tool = {
        "aid": "AID.CUSTOM.v1",
        "name": "custom",
        "tags": ["tag.custom"],
        "side_effects": ["none"],
        "deterministic": True,
        "inputs_schema": {"type": "object"},
    }
    tools = write(tmp_path, {"pack": "mine", "tools": [tool]}, "tools.json")
    custom = goal(
        goal_id="goal.CUSTOM.v1",
        candidate_tags=["tag.custom"],
        complete_when={"all_ok": ["AID.CUSTOM.v1"]},
        bindings={},
    )
    goals = write(tmp_path, {"pack": "mine", "goals": [custom]}, "goals.json")
    assert [p.code for p in lint([goals])] == ["CTS204"]
    assert lint([tools, goals]) == []


def test_a_broken_operator_goalpack_stops_catalog_loading(root: Path) -> None:
    operator_goalpack(root, BROKEN["CTS212"])
    with pytest.raises(ManifestError, match="CTS212"):
        Catalog.load(Root(str(root)))


def test_a_schema_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"pack": "t", "goals": [goal(budget={"max_steps": 0})]})
    with pytest.raises(ManifestError, match=r"manifest\.json: .*max_steps"):
        load_goals([path])


def test_a_goal_declared_twice_across_packs_is_refused(root: Path) -> None:
    operator_goalpack(root, {**GOOD, "goal_id": "goal.NOOP.v1"})
    with pytest.raises(ManifestError, match="already declared"):
        Catalog.load(Root(str(root)))


@pytest.mark.parametrize(
    ("ptr", "tokens"), [("/inputs/a", ("inputs", "a")), ("/outputs/a~1b/~0c", ("outputs", "a/b", "~c"))]
)
def test_pointers(ptr: str, tokens: tuple[str, ...]) -> None:
    assert parse_pointer(ptr) == tokens


@pytest.mark.parametrize("ptr", ["inputs/a", "/inputs/a~", "/inputs/~2"])
def test_bad_pointers(ptr: str) -> None:
    with pytest.raises(PointerError):
        parse_pointer(ptr)

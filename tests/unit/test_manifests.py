"""Tool manifests: schema-checked, tiers derived from side effects, inputs validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machina.manifests.tools import (
    ManifestError,
    builtin_toolpack,
    load_tools,
    tier_of,
    toolpack_manifests,
)

DESIGN_AIDS = {
    "AID.SHELL.EXEC.v1",
    "AID.NET.HTTP_GET.v1",
    "AID.FILE.READ.v1",
    "AID.FILE.WRITE.v1",
    "AID.ERROR_SCAN.v1",
    "AID.REPORT_SUMMARY.v1",
    "AID.MEMORY.APPEND.v1",
    "AID.MEMORY.QUERY.v1",
    "AID.EMBED.TEXT.v1",
    "AID.QUEUE.ENQUEUE.v1",
    "AID.PROC.SELF_METRICS.v1",
    "AID.GPU_SMOKE.v1",
    "AID.NOOP.v1",
    "AID.ASK_SUP.v1",
}


def test_builtin_pack_declares_every_tool_of_the_design() -> None:
    tools = load_tools([builtin_toolpack()])
    assert set(tools) >= DESIGN_AIDS


def test_builtin_tools_keep_the_earlier_input_names() -> None:
    tools = load_tools([builtin_toolpack()])
    props = {aid: set(t.inputs_schema.get("properties", {})) for aid, t in tools.items()}
    assert {"cmd", "cwd", "timeout_ms"} <= props["AID.SHELL.EXEC.v1"]
    assert {"url", "timeout_ms", "max_bytes"} <= props["AID.NET.HTTP_GET.v1"]
    assert {"path", "max_bytes"} <= props["AID.FILE.READ.v1"]
    assert {"path", "content", "overwrite", "mkdirs"} <= props["AID.FILE.WRITE.v1"]
    assert {"input_path", "pattern", "max_rows"} <= props["AID.ERROR_SCAN.v1"]


def test_tiers_come_from_side_effects() -> None:
    tools = load_tools([builtin_toolpack()])
    assert tools["AID.NOOP.v1"].tier == 0
    assert tools["AID.FILE.READ.v1"].tier == 0
    assert tools["AID.FILE.WRITE.v1"].tier == 1
    assert tools["AID.NET.HTTP_GET.v1"].tier == 2
    assert tools["AID.SHELL.EXEC.v1"].tier == 3
    assert tier_of(["fs_read", "shell"]) == 3 and tier_of([]) == 0


def test_inputs_are_validated_against_the_schema() -> None:
    shell = load_tools([builtin_toolpack()])["AID.SHELL.EXEC.v1"]
    assert shell.input_errors({"cmd": ["ls", "-l"]}) == []
    assert shell.input_errors({"cmd": "ls -l"}) == ["cmd: 'ls -l' is not of type 'array'"]
    assert any("required" in e for e in shell.input_errors({}))
    assert any("Additional properties" in e for e in shell.input_errors({"cmd": ["ls"], "shell": True}))


def write_pack(directory: Path, doc: dict) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "manifest.json"
    path.write_text(json.dumps(doc))
    return str(path)


TOOL = {
    "aid": "AID.OPS.PING.v1",
    "name": "ping",
    "tags": ["tag.ops"],
    "side_effects": ["none"],
    "deterministic": True,
    "inputs_schema": {"type": "object"},
}


def test_operator_packs_are_found_under_the_root(tmp_path: Path) -> None:
    write_pack(tmp_path / "toolpacks" / "ops", {"pack": "ops", "tools": [TOOL]})
    (tmp_path / "toolpacks" / "empty").mkdir()
    paths = toolpack_manifests(str(tmp_path / "toolpacks"))
    assert paths[0] == builtin_toolpack() and len(paths) == 2
    assert "AID.OPS.PING.v1" in load_tools(paths)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"aid": "shell.exec"}, "does not match"),
        ({"side_effects": ["launch_missiles"]}, "is not one of"),
        ({"side_effects": []}, "should be non-empty"),
        ({"tier": 0}, "Additional properties"),
        ({"inputs_schema": {"type": "no-such-type"}}, "not a valid JSON Schema"),
        ({"tags": ["Not A Tag"]}, "does not match"),
    ],
)
def test_bad_manifests_are_refused_with_the_file_named(tmp_path: Path, change: dict, message: str) -> None:
    path = write_pack(tmp_path / "bad", {"pack": "bad", "tools": [{**TOOL, **change}]})
    with pytest.raises(ManifestError, match=message) as excinfo:
        load_tools([path])
    assert path in str(excinfo.value) and excinfo.value.exit_code == 65


def test_an_aid_declared_twice_is_refused(tmp_path: Path) -> None:
    first = write_pack(tmp_path / "a", {"pack": "a", "tools": [TOOL]})
    second = write_pack(tmp_path / "b", {"pack": "b", "tools": [TOOL]})
    with pytest.raises(ManifestError, match="already declared"):
        load_tools([first, second])


def test_unreadable_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_text("{")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_tools([str(bad)])


def test_an_error_about_the_whole_manifest_names_the_manifest(tmp_path: Path) -> None:
    path = write_pack(tmp_path / "nameless", {"tools": [TOOL]})  # no "pack": the error is the document's own
    with pytest.raises(ManifestError) as excinfo:
        load_tools([path])
    assert f"{path}: manifest: 'pack' is a required property" in str(excinfo.value)

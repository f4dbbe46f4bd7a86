"""AID.FILE.LIST/SEARCH/DIFF/EDIT/APPEND/DELETE.v1 through a real toolhost: results, confinement (links,
``..``, the suite's directories), and that a refused or failed change leaves the file as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from .conftest import needs_bwrap

pytestmark = needs_bwrap


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    root = tmp_path_factory.mktemp("files") / "root"
    init_root(str(root))
    data = root / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "app.log").write_text("INFO start\nERROR disk full\ninfo again\nERROR net down\n")
    (data / "notes.txt").write_text("alpha\nbeta\ngamma\n")
    (data / "sub" / "b.log").write_text("error: lower case\n")
    (data / "sub" / "deeper" / "c.log").write_text("ERROR deep\n")
    (data / "blob.bin").write_bytes(b"ERROR\x00\x01binary")
    (data / "escape").symlink_to("/etc")
    (data / "passwd.log").symlink_to("/etc/passwd")
    (root / "state" / "secret.txt").write_text("ERROR in a place tools cannot read\n")
    with running_toolhost(str(root), env={"MACHINA_FILE_READ_MAX_BYTES": "4096"}) as running:
        yield running


def call(host: RunningToolhost, aid: str, inputs: dict[str, object]) -> toolapi.ToolReply:
    return host.client.call(aid, inputs)


# --- LIST ----------------------------------------------------------------------------------------------------


def test_list_the_root_leaves_out_the_suites_directories(host: RunningToolhost) -> None:
    reply = call(host, "AID.FILE.LIST.v1", {})
    assert reply.ok, reply
    names = {e["path"] for e in reply.output["entries"]}
    assert "data" in names and not names & {"queue", "state", "run"}
    assert {e["type"] for e in reply.output["entries"] if e["path"] == "data"} == {"dir"}


def test_list_depth_glob_links_and_limits(host: RunningToolhost) -> None:
    one = call(host, "AID.FILE.LIST.v1", {"path": "data"})
    entries = {e["path"]: e for e in one.output["entries"]}
    assert set(entries) == {
        "data/app.log", "data/blob.bin", "data/escape", "data/notes.txt", "data/passwd.log", "data/sub"
    }  # fmt: skip
    assert entries["data/escape"]["type"] == "link" and entries["data/app.log"]["size"] == 53
    deep = call(host, "AID.FILE.LIST.v1", {"path": "data", "depth": 8, "glob": "*.log"})
    paths = [e["path"] for e in deep.output["entries"]]
    assert paths == ["data/app.log", "data/passwd.log", "data/sub/b.log", "data/sub/deeper/c.log"]
    assert not any(p.startswith("data/escape/") for p in paths)  # the link to /etc is not entered
    capped = call(host, "AID.FILE.LIST.v1", {"path": "data", "depth": 8, "max_entries": 2})
    assert capped.output["count"] == 2 and capped.output["truncated"] is True


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("state", "belongs to the suite"),
        ("queue/inbox", "belongs to the suite"),
        ("data/../state", "'..' is not allowed"),
        ("data/escape", "symbolic link"),
        ("/etc", "outside the working root"),
        ("data/nothing", "does not exist"),
        ("data/app.log", "is not a directory"),
    ],
)
def test_list_refusals(host: RunningToolhost, path: str, message: str) -> None:
    reply = call(host, "AID.FILE.LIST.v1", {"path": path})
    assert reply.status == toolapi.TOOL_ERROR and message in reply.error, reply


# --- SEARCH --------------------------------------------------------------------------------------------------


def test_search_finds_lines_and_skips_binary_links_and_the_suite(host: RunningToolhost) -> None:
    reply = call(host, "AID.FILE.SEARCH.v1", {"pattern": "^ERROR", "path": "data"})
    assert reply.ok, reply
    found = [(m["path"], m["line"], m["text"]) for m in reply.output["matches"]]
    assert found == [
        ("data/app.log", 2, "ERROR disk full"),
        ("data/app.log", 4, "ERROR net down"),
        ("data/sub/deeper/c.log", 1, "ERROR deep"),
    ]
    assert "data/blob.bin" in reply.output["skipped"]
    everywhere = call(host, "AID.FILE.SEARCH.v1", {"pattern": "ERROR"})
    assert not any(m["path"].startswith(("state", "data/passwd")) for m in everywhere.output["matches"])


def test_search_options(host: RunningToolhost) -> None:
    folded = call(host, "AID.FILE.SEARCH.v1", {"pattern": "error", "path": "data", "ignore_case": True, "glob": "b.*"})
    assert [m["path"] for m in folded.output["matches"]] == ["data/sub/b.log"]
    literal = call(host, "AID.FILE.SEARCH.v1", {"pattern": "error:", "literal": True, "path": "data/sub/b.log"})
    assert literal.output["count"] == 1 and literal.output["files_searched"] == 1
    capped = call(host, "AID.FILE.SEARCH.v1", {"pattern": ".", "path": "data", "max_matches": 3})
    assert capped.output["count"] == 3 and capped.output["truncated"] is True
    bad = call(host, "AID.FILE.SEARCH.v1", {"pattern": "(unclosed"})
    assert bad.status == toolapi.TOOL_ERROR and "not a valid regular expression" in bad.error
    refused = call(host, "AID.FILE.SEARCH.v1", {"pattern": "x", "path": "state"})
    assert refused.status == toolapi.TOOL_ERROR and "belongs to the suite" in refused.error


# --- DIFF ----------------------------------------------------------------------------------------------------


def test_diff_against_content_and_another_file(host: RunningToolhost) -> None:
    proposed = call(host, "AID.FILE.DIFF.v1", {"path": "data/notes.txt", "content": "alpha\nBETA\ngamma\n"})
    assert (
        proposed.ok and proposed.output["changed"] and (proposed.output["added"], proposed.output["removed"]) == (1, 1)
    )
    assert "-beta\n+BETA\n" in proposed.output["diff"]
    same = call(host, "AID.FILE.DIFF.v1", {"path": "data/notes.txt", "other_path": "data/notes.txt"})
    assert same.ok and same.output["changed"] is False and same.output["diff"] == ""
    both = call(host, "AID.FILE.DIFF.v1", {"path": "data/notes.txt"})
    assert both.status == toolapi.TOOL_ERROR and "other_path" in both.error


def test_diff_refuses_binary_links_and_files_over_the_read_cap(host: RunningToolhost) -> None:
    Path(host.root, "data", "big.txt").write_text("x" * 5000)
    try:
        big = call(host, "AID.FILE.DIFF.v1", {"path": "data/big.txt", "content": ""})
        assert big.status == toolapi.TOOL_ERROR and "MACHINA_FILE_READ_MAX_BYTES=4096" in big.error
    finally:
        os.unlink(Path(host.root, "data", "big.txt"))
    binary = call(host, "AID.FILE.DIFF.v1", {"path": "data/blob.bin", "content": ""})
    assert binary.status == toolapi.TOOL_ERROR and "not text" in binary.error
    link = call(host, "AID.FILE.DIFF.v1", {"path": "data/passwd.log", "content": ""})
    assert link.status == toolapi.TOOL_ERROR and "symbolic link" in link.error


# --- EDIT ----------------------------------------------------------------------------------------------------


def test_edit_replaces_once_keeps_a_backup_and_returns_the_diff(host: RunningToolhost) -> None:
    target = Path(host.root, "data", "edit.txt")
    target.write_text("one two\nthree two\n")
    reply = call(host, "AID.FILE.EDIT.v1", {"path": "data/edit.txt", "old_string": "one two", "new_string": "1 2"})
    assert reply.ok, reply
    assert target.read_text() == "1 2\nthree two\n" and reply.output["replacements"] == 1
    assert Path(host.root, "data", "edit.txt.bak").read_text() == "one two\nthree two\n"
    assert "-one two\n+1 2\n" in reply.output["diff"]
    everywhere = call(
        host, "AID.FILE.EDIT.v1", {"path": "data/edit.txt", "old_string": "two", "new_string": "2", "replace_all": True}
    )
    assert everywhere.ok and target.read_text() == "1 2\nthree 2\n" and everywhere.output["replacements"] == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"old_string": "absent", "new_string": "x"}, "was not found"),
        ({"old_string": "a", "new_string": "b"}, "occurs 2 times"),
        ({"old_string": "a", "new_string": "a"}, "nothing to change"),
    ],
)
def test_a_failed_edit_changes_nothing(host: RunningToolhost, inputs: dict[str, object], message: str) -> None:
    target = Path(host.root, "data", "keep.txt")
    target.write_text("a\na\n")
    reply = call(host, "AID.FILE.EDIT.v1", {"path": "data/keep.txt", **inputs})
    assert reply.status == toolapi.TOOL_ERROR and message in reply.error
    assert target.read_text() == "a\na\n" and not Path(host.root, "data", "keep.txt.bak").exists()


def test_edit_is_confined(host: RunningToolhost) -> None:
    for path, message in (("data/passwd.log", "symbolic link"), ("logs/x.log", "belongs to the suite")):
        Path(host.root, "logs", "x.log").write_text("root\n")
        reply = call(host, "AID.FILE.EDIT.v1", {"path": path, "old_string": "root", "new_string": "evil"})
        assert reply.status == toolapi.TOOL_ERROR and message in reply.error, (path, reply)
    assert Path(host.root, "logs", "x.log").read_text() == "root\n"


# --- APPEND --------------------------------------------------------------------------------------------------


def test_append_adds_at_the_end_and_creates_only_when_asked(host: RunningToolhost) -> None:
    target = Path(host.root, "data", "journal.txt")
    missing = call(host, "AID.FILE.APPEND.v1", {"path": "data/journal.txt", "content": "a\n"})
    assert missing.status == toolapi.TOOL_ERROR and "set create" in missing.error and not target.exists()
    first = call(host, "AID.FILE.APPEND.v1", {"path": "data/journal.txt", "content": "a\n", "create": True})
    second = call(host, "AID.FILE.APPEND.v1", {"path": "data/journal.txt", "content": "bé\n"})
    assert first.ok and second.ok and target.read_text() == "a\nbé\n"
    assert (second.output["offset"], second.output["bytes"], second.output["size"]) == (2, 4, 6)


def test_append_is_confined(host: RunningToolhost) -> None:
    before = Path("/etc/passwd").read_bytes()
    for path, message in (
        ("data/passwd.log", "symbolic link"),
        ("data/escape/passwd", "symbolic link"),
        ("memory/insights.jsonl", "belongs to the suite"),
        ("data/sub", "Is a directory"),
    ):
        reply = call(host, "AID.FILE.APPEND.v1", {"path": path, "content": "evil\n", "create": True})
        assert reply.status == toolapi.TOOL_ERROR and message in reply.error, (path, reply)
    assert Path("/etc/passwd").read_bytes() == before
    assert not Path(host.root, "memory", "insights.jsonl").exists()


# --- DELETE --------------------------------------------------------------------------------------------------


def test_delete_keeps_a_recoverable_copy_out_of_the_tools_reach(host: RunningToolhost) -> None:
    target = Path(host.root, "data", "sub", "gone.txt")
    target.write_text("keep me\n")
    reply = call(host, "AID.FILE.DELETE.v1", {"path": "data/sub/gone.txt"})
    assert reply.ok, reply
    kept = Path(host.root, reply.output["kept_as"])
    assert not target.exists() and kept.read_text() == "keep me\n"
    assert reply.output["kept_as"].startswith("state/trash/") and reply.output["kept_as"].endswith("/data/sub/gone.txt")
    read_back = call(host, "AID.FILE.READ.v1", {"path": reply.output["kept_as"]})
    assert read_back.status == toolapi.TOOL_ERROR and "belongs to the suite" in read_back.error
    again = call(host, "AID.FILE.DELETE.v1", {"path": reply.output["kept_as"]})
    assert again.status == toolapi.TOOL_ERROR and kept.exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data/passwd.log", "not a regular file"),
        ("data/escape", "not a regular file"),
        ("data/sub", "not a regular file"),
        ("data/nothing.txt", "no such file"),
        ("queue/inbox/x.json", "belongs to the suite"),
        ("data/escape/passwd", "symbolic link"),
    ],
)
def test_delete_refusals_leave_everything_in_place(host: RunningToolhost, path: str, message: str) -> None:
    reply = call(host, "AID.FILE.DELETE.v1", {"path": path})
    assert reply.status == toolapi.TOOL_ERROR and message in reply.error, reply
    assert Path(host.root, "data", "passwd.log").is_symlink() and Path("/etc/passwd").exists()
    assert Path(host.root, "data", "sub", "b.log").exists()


def test_tiers_follow_the_side_effects(host: RunningToolhost) -> None:
    tools = {t["aid"]: t for t in host.client.list_tools()}
    for name, tier in (("LIST", 0), ("SEARCH", 0), ("DIFF", 0), ("EDIT", 1), ("APPEND", 1), ("DELETE", 1)):
        assert tools[f"AID.FILE.{name}.v1"]["tier"] == tier and tools[f"AID.FILE.{name}.v1"]["path"] == "pool"


def test_hidden_names_are_neither_listed_nor_reached(host: RunningToolhost) -> None:
    Path(host.root, "data", ".secret").write_text("ERROR hidden\n")
    listed = call(host, "AID.FILE.LIST.v1", {"path": "data"})
    assert all(".secret" not in e["path"] for e in listed.output["entries"])
    searched = call(host, "AID.FILE.SEARCH.v1", {"pattern": "hidden", "path": "data"})
    assert searched.output["count"] == 0
    for aid, inputs in (
        ("AID.FILE.APPEND.v1", {"path": "data/.secret", "content": "x"}),
        ("AID.FILE.DELETE.v1", {"path": "data/.secret"}),
        ("AID.FILE.LIST.v1", {"path": "data/.git"}),
    ):
        reply = call(host, aid, inputs)
        assert reply.status == toolapi.TOOL_ERROR and "hidden name" in reply.error, (aid, reply)
    assert Path(host.root, "data", ".secret").read_text() == "ERROR hidden\n"

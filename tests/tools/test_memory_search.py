"""AID.MEMORY.SEARCH.v1 through a real toolhost: the memory index searched across streams, with new lines
picked up on the next call, and the index itself out of every tool's reach."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.memory.streams import append
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from .conftest import needs_bwrap

pytestmark = needs_bwrap
AID = "AID.MEMORY.SEARCH.v1"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    root = tmp_path_factory.mktemp("memsearch") / "root"
    init_root(str(root))
    memory = str(root / "memory")
    append(memory, "notes", text="the backup job failed because the disk was full")
    append(memory, "notes", text="lunch menu: soup and bread")
    append(memory, "journal", {"event": "disk replaced", "host": "db1"})
    with running_toolhost(str(root), env={"MACHINA_PERMISSION_MODE": "standard"}) as running:
        yield running


def test_search_finds_matching_lines_across_streams(host: RunningToolhost) -> None:
    reply = host.client.call(AID, {"query": "disk full"})
    assert reply.ok, reply
    found = [(r["stream"], r["text"]) for r in reply.output["results"]]
    assert found[0] == ("notes", "the backup job failed because the disk was full")
    assert ("journal", '{"event": "disk replaced", "host": "db1"}') in found
    assert all("lunch" not in text for _, text in found)
    journal = next(r for r in reply.output["results"] if r["stream"] == "journal")
    assert journal["record"] == {"event": "disk replaced", "host": "db1"} and journal["score"] > 0


def test_streams_narrow_the_search_and_new_lines_are_found(host: RunningToolhost) -> None:
    only = host.client.call(AID, {"query": "disk", "streams": ["journal"]})
    assert [r["stream"] for r in only.output["results"]] == ["journal"]
    append(str(Path(host.root, "memory")), "journal", {"event": "bread delivered"})
    later = host.client.call(AID, {"query": "bread", "streams": ["journal"], "top_k": 3})
    assert [r["record"] for r in later.output["results"]] == [{"event": "bread delivered"}]
    none = host.client.call(AID, {"query": "zebra", "streams": ["missing"]})
    assert none.ok and none.output["results"] == []


def test_bad_inputs_are_refused(host: RunningToolhost) -> None:
    for inputs in ({}, {"query": ""}, {"query": "x", "streams": ["../etc"]}, {"query": "x", "top_k": 0}):
        assert host.client.call(AID, inputs).status == toolapi.INVALID_INPUT, inputs


def test_search_is_tier_0_and_the_index_stays_the_suites(host: RunningToolhost) -> None:
    tool = {t["aid"]: t for t in host.client.list_tools()}[AID]
    assert (tool["tier"], tool["permission"]) == (0, "allow")
    assert Path(host.root, "state", "memory", "index.sqlite3").is_file()
    read = host.client.call("AID.FILE.READ.v1", {"path": "state/memory/index.sqlite3"})
    assert read.status == toolapi.TOOL_ERROR and "belongs to the suite" in read.error

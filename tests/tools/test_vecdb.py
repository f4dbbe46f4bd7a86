"""AID.VECDB.UPSERT.v1 and AID.VECDB.QUERY.v1 through a real toolhost: vectors and texts, replacement,
filters, dimensions, bad input, persistence across a restart, and the store out of the tools' reach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from machina import toolapi
from machina.testing.toolhost import RunningToolhost

from .conftest import needs_bwrap

pytestmark = needs_bwrap
Start = Callable[..., RunningToolhost]


def upsert(host: RunningToolhost, items: list[dict[str, object]], collection: str = "docs") -> toolapi.ToolReply:
    return host.client.call("AID.VECDB.UPSERT.v1", {"collection": collection, "items": items})


def query(host: RunningToolhost, **inputs: object) -> toolapi.ToolReply:
    return host.client.call("AID.VECDB.QUERY.v1", {"collection": "docs", **inputs})


def test_vectors_ranked_by_cosine_with_replacement_and_filters(toolhost: Start) -> None:
    host = toolhost()
    first = upsert(
        host,
        [
            {"id": "east", "vector": [1, 0, 0], "metadata": {"kind": "axis"}},
            {"id": "north", "vector": [0, 2, 0], "metadata": {"kind": "axis"}},
            {"id": "diag", "vector": [1, 1, 0], "text": "between", "metadata": {"kind": "mix"}},
        ],
    )
    assert first.ok and (first.output["upserted"], first.output["count"], first.output["dim"]) == (3, 3, 3)
    near = query(host, vector=[0.9, 0.1, 0], top_k=2)
    assert [r["id"] for r in near.output["results"]] == ["east", "diag"] and near.output["backend"] == "numpy"
    assert near.output["results"][0]["score"] > near.output["results"][1]["score"] > 0
    moved = upsert(host, [{"id": "east", "vector": [0, 0, 5]}])
    assert moved.output["replaced"] == 1 and moved.output["count"] == 3
    assert query(host, vector=[1, 0, 0], top_k=1).output["results"][0]["id"] == "diag"
    only_axes = query(host, vector=[1, 1, 0], filter={"kind": "axis"})
    assert [r["id"] for r in only_axes.output["results"]] == ["north"]  # east lost its metadata when replaced
    restarted = toolhost()
    assert query(restarted, vector=[0, 0, 1], top_k=1).output["results"][0]["id"] == "east"


def test_texts_are_embedded_and_say_by_what(toolhost: Start) -> None:
    host = toolhost()  # no machina-embed running: the local hash embedding
    stored = upsert(
        host,
        [{"id": "a", "text": "disk full on the database host"}, {"id": "b", "text": "lunch menu soup and bread"}],
        "notes",
    )
    assert stored.ok and "hash" in stored.output["embedder"]
    found = host.client.call("AID.VECDB.QUERY.v1", {"collection": "notes", "text": "database disk full", "top_k": 1})
    assert found.ok and found.output["results"][0]["id"] == "a"
    assert found.output["results"][0]["text"] == "disk full on the database host"


def test_bad_input_changes_nothing(toolhost: Start) -> None:
    host = toolhost()
    assert upsert(host, [{"id": "x", "vector": [1, 2]}]).ok
    for items, message in (
        ([{"id": "y", "vector": [1, 2, 3]}], "holds 2-dimensional vectors, not 3"),
        ([{"id": "y", "vector": [0, 0]}], "zero vector"),
        ([{"id": "y"}], "give a vector or a text"),
        ([{"id": "y", "vector": [1]}, {"id": "z", "vector": [1, 2]}], "same dimension"),
    ):
        reply = upsert(host, items)
        assert reply.status == toolapi.TOOL_ERROR and message in reply.error, (items, reply)
    assert query(host, vector=[1, 0]).output["count"] == 1
    both = query(host, vector=[1, 0], text="x")
    assert both.status == toolapi.TOOL_ERROR and "not both" in both.error
    wrong = query(host, vector=[1, 0, 0])
    assert wrong.status == toolapi.TOOL_ERROR and "2-dimensional" in wrong.error
    for inputs in ({"collection": "../x", "items": [{"id": "a", "vector": [1]}]}, {"collection": "c", "items": []}):
        assert host.client.call("AID.VECDB.UPSERT.v1", inputs).status == toolapi.INVALID_INPUT
    empty = host.client.call("AID.VECDB.QUERY.v1", {"collection": "nothing_here", "vector": [1.0]})
    assert empty.ok and empty.output["results"] == []


def test_the_store_is_the_suites(toolhost: Start) -> None:
    host = toolhost()
    assert upsert(host, [{"id": "a", "vector": [1.0]}]).ok
    assert Path(host.root, "state", "vecdb", "docs.npz").is_file()
    read = host.client.call("AID.FILE.READ.v1", {"path": "state/vecdb/docs.npz"})
    assert read.status == toolapi.TOOL_ERROR and "belongs to the suite" in read.error
    tools = {t["aid"]: t for t in host.client.list_tools()}
    assert (tools["AID.VECDB.UPSERT.v1"]["tier"], tools["AID.VECDB.QUERY.v1"]["tier"]) == (1, 0)

"""Graph memory: entities and relations as append-only typed streams, decay, compaction, /graph_status data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from machina.clock import FakeClock
from machina.memory import graph
from machina.memory.verify import verify_memory
from tests.conftest import bin_env

DAY = 86400.0


def test_mentions_and_relations_accumulate_under_one_id(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    memory = str(tmp_path)
    graph.mention_entity(memory, "Postgres", "service", aliases=("pg",), clock=clock)
    clock.advance(60)
    again = graph.mention_entity(memory, "  postgres ", "Service", clock=clock)
    assert again["id"] == "entity:service:postgres" and again["mention_count"] == 2
    assert again["name"] == "Postgres" and again["aliases"] == ["pg"]
    assert again["first_seen"] == 1_800_000_000.0 and again["last_seen"] == 1_800_000_060.0
    graph.relate(memory, ("web01", "host"), "runs", ("Postgres", "service"), clock=clock)
    status = graph.graph_status(memory, clock=clock)
    assert status["entities"] == 2 and status["relations"] == 1
    assert status["top"][0] == {"name": "Postgres", "type": "service", "mentions": 3}
    (match,) = graph.graph_status(memory, "PG", clock=clock)["matches"]  # found by alias
    assert match["neighbours"] == [
        {"predicate": "runs", "direction": "in", "entity": "web01", "id": "entity:host:web01", "strength": 1.0}
    ]
    assert verify_memory(memory, str(tmp_path / "state")).ok  # the records fit their schemas


def test_relations_decay_and_are_refreshed_by_new_evidence(tmp_path: Path) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    memory = str(tmp_path)
    graph.relate(memory, ("a", "thing"), "uses", ("b", "thing"), clock=clock)
    clock.advance(30 * DAY)  # one half-life
    (match,) = graph.graph_status(memory, "a", clock=clock)["matches"]
    assert match["neighbours"][0]["strength"] == 0.5
    again = graph.relate(memory, ("a", "thing"), "uses", ("b", "thing"), clock=clock)
    assert again["weight"] == 1.5 and again["mention_count"] == 2
    clock.advance(200 * DAY)  # far below the threshold: faded, not shown
    status = graph.graph_status(memory, clock=clock)
    assert status["relations"] == 0 and status["faded_relations"] == 1
    assert graph.graph_status(memory, "a", clock=clock)["matches"][0]["neighbours"] == []


def test_compaction_keeps_the_newest_line_per_id_and_archives_the_rest(tmp_path: Path, monkeypatch) -> None:
    clock = FakeClock(start=1_800_000_000.0)
    memory = str(tmp_path)
    for i in range(3):
        graph.mention_entity(memory, "alpha", "thing", clock=clock)
        graph.mention_entity(memory, f"beta{i}", "thing", clock=clock)
        clock.advance(1)
    monkeypatch.setattr(graph, "MAX_ENTITIES", 3)
    moved = graph.compact(memory, clock)
    assert moved == {"entities": 3}
    kept = [json.loads(line)["record"] for line in (tmp_path / "entities.jsonl").read_text().splitlines()]
    assert sorted((r["name"], r["mention_count"]) for r in kept) == [("alpha", 3), ("beta1", 1), ("beta2", 1)]
    (archived,) = list((tmp_path / "archive").glob("*/entities.jsonl.compacted"))
    assert len(archived.read_text().splitlines()) == 3
    assert graph.compact(memory, clock) == {"entities": 0}


def test_machina_memory_graph(machina_root: Path) -> None:
    graph.relate(str(machina_root / "memory"), ("web01", "host"), "runs", ("nginx", "service"))
    env = bin_env(MACHINA_ROOT=str(machina_root))

    def run(*a):
        return subprocess.run(["machina", "memory", "graph", *a], env=env, capture_output=True, text=True, timeout=60)

    overview = run()
    assert overview.returncode == 0 and overview.stdout.startswith("2 entities, 1 relations")
    one = run("nginx")
    assert one.returncode == 0 and "<- runs web01" in one.stdout
    assert run("nobody").returncode == 1
    assert json.loads(run("--json").stdout)["entities"] == 2

"""Graph memory: entities and the relations between them, in the typed streams ``entities`` and
``relations`` (AGENT.md section 6), with decay and limits.

The streams are append-only logs: a mention appends the entity's (or relation's) updated record, and the
newest line for an id wins when the graph is read.  A relation's strength decays with the time since it
was last seen (half-life ``RELATION_HALF_LIFE_DAYS``); relations that decayed below ``FORGET_BELOW`` are
left out.  :func:`compact` (run by the autonomic engine's hygiene) rewrites each stream to one line per
id, moving superseded and over-the-limit records into the archive, never into nothing.

Ids are derived from names (``entity:<type>:<normalised name>``), so the same thing mentioned twice is one
entity; aliases are kept on the record.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir, write_atomic
from machina.memory.streams import append, archive_path, locked, read_lines, stream_path

RELATION_HALF_LIFE_DAYS = 30.0
FORGET_BELOW = 0.05
MAX_ENTITIES = 10_000
MAX_RELATIONS = 50_000
MAX_NAME = 200
_SPACE = re.compile(r"\s+")


def normalise(name: str) -> str:
    return _SPACE.sub(" ", name.strip()).lower()[:MAX_NAME]


def entity_id(name: str, kind: str) -> str:
    return f"entity:{normalise(kind)}:{normalise(name)}"


def relation_id(source_id: str, predicate: str, target_id: str) -> str:
    digest = hashlib.sha256(f"{source_id}\0{normalise(predicate)}\0{target_id}".encode()).hexdigest()[:24]
    return f"relation:{digest}"


@dataclass
class Graph:
    entities: dict[str, dict[str, Any]] = field(default_factory=dict)
    relations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def strength(self, relation: dict[str, Any], now: float) -> float:
        age_days = max(0.0, now - float(relation.get("last_seen") or 0)) / 86400
        return float(relation.get("weight") or 1.0) * 2 ** (-age_days / RELATION_HALF_LIFE_DAYS)

    def neighbours(self, ident: str, now: float) -> list[dict[str, Any]]:
        found = []
        for rel in self.relations.values():
            if ident not in (rel["source_id"], rel["target_id"]):
                continue
            strength = self.strength(rel, now)
            if strength < FORGET_BELOW:
                continue
            other = rel["target_id"] if rel["source_id"] == ident else rel["source_id"]
            direction = "out" if rel["source_id"] == ident else "in"
            name = self.entities.get(other, {}).get("name", other)
            found.append(
                {
                    "predicate": rel["predicate"],
                    "direction": direction,
                    "entity": name,
                    "id": other,
                    "strength": round(strength, 4),
                }
            )
        return sorted(found, key=lambda n: (-n["strength"], n["entity"]))


def _latest(memory_dir: str, stream: str) -> dict[str, dict[str, Any]]:
    path = stream_path(memory_dir, stream)
    latest: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return latest
    for line in read_lines(path):
        record = (line.entry or {}).get("record")
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            latest[record["id"]] = record
    return latest


def load_graph(memory_dir: str) -> Graph:
    return Graph(_latest(memory_dir, "entities"), _latest(memory_dir, "relations"))


def mention_entity(
    memory_dir: str,
    name: str,
    kind: str,
    *,
    aliases: tuple[str, ...] = (),
    clock: Clock = SYSTEM_CLOCK,
    graph: Graph | None = None,
) -> dict[str, Any]:
    """Record a mention of an entity: created on first sight, counted and refreshed after."""
    graph = graph or load_graph(memory_dir)
    ident, now = entity_id(name, kind), clock.time()
    old = graph.entities.get(ident)
    record = {
        "id": ident,
        "name": old["name"] if old else name.strip()[:MAX_NAME],
        "type": normalise(kind),
        "aliases": sorted(set(old.get("aliases", []) if old else []) | {a.strip()[:MAX_NAME] for a in aliases}),
        "first_seen": old["first_seen"] if old else now,
        "last_seen": now,
        "mention_count": (old["mention_count"] if old else 0) + 1,
    }
    append(memory_dir, "entities", record, clock=clock)
    graph.entities[ident] = record
    return record


def relate(
    memory_dir: str,
    source: tuple[str, str],
    predicate: str,
    target: tuple[str, str],
    *,
    weight: float = 1.0,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """Record that ``source`` (name, type) ``predicate`` ``target``; both entities are mentioned too."""
    graph = load_graph(memory_dir)
    src = mention_entity(memory_dir, *source, clock=clock, graph=graph)
    dst = mention_entity(memory_dir, *target, clock=clock, graph=graph)
    ident, now = relation_id(src["id"], predicate, dst["id"]), clock.time()
    old = graph.relations.get(ident)
    record = {
        "id": ident,
        "source_id": src["id"],
        "target_id": dst["id"],
        "predicate": normalise(predicate),
        # A relation seen again is refreshed: its decayed strength plus the new evidence, capped at 10.
        "weight": round(min(10.0, (graph.strength(old, now) if old else 0.0) + weight), 4),
        "first_seen": old["first_seen"] if old else now,
        "last_seen": now,
        "mention_count": (old["mention_count"] if old else 0) + 1,
    }
    append(memory_dir, "relations", record, clock=clock)
    return record


def graph_status(memory_dir: str, entity: str | None = None, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """What ``/graph_status`` shows: counts and the busiest entities, or one entity's neighbours."""
    graph, now = load_graph(memory_dir), clock.time()
    live = [r for r in graph.relations.values() if graph.strength(r, now) >= FORGET_BELOW]
    if entity is None:
        top = sorted(graph.entities.values(), key=lambda e: (-e.get("mention_count", 0), e["name"]))[:10]
        return {
            "entities": len(graph.entities),
            "relations": len(live),
            "faded_relations": len(graph.relations) - len(live),
            "top": [{"name": e["name"], "type": e["type"], "mentions": e.get("mention_count", 0)} for e in top],
        }
    wanted = normalise(entity)
    matches = [
        e
        for e in graph.entities.values()
        if normalise(e["name"]) == wanted or wanted in [normalise(a) for a in e.get("aliases", [])]
    ]
    return {
        "query": entity,
        "matches": [
            {"id": e["id"], "name": e["name"], "type": e["type"], "neighbours": graph.neighbours(e["id"], now)}
            for e in matches
        ],
    }


def compact(memory_dir: str, clock: Clock = SYSTEM_CLOCK) -> dict[str, int]:
    """One line per id, newest kept, at most MAX_* records (least recently seen go first); every line
    removed goes to ``memory/archive/YYYYMMDD/<stream>.jsonl.compacted``.  Returns lines moved per stream."""
    moved: dict[str, int] = {}
    day = time.strftime("%Y%m%d", time.gmtime(clock.time()))
    for stream, limit in (("entities", MAX_ENTITIES), ("relations", MAX_RELATIONS)):
        path = stream_path(memory_dir, stream)
        if not os.path.exists(path):
            continue
        with locked(path) as fd:
            lines = list(read_lines(path))
            newest: dict[str, tuple[int, float]] = {}  # id -> (line index, last seen)
            for n, line in enumerate(lines):
                record = (line.entry or {}).get("record")
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    newest[record["id"]] = (n, float(record.get("last_seen") or 0))
            ranked = [n for n, _ in sorted(newest.values(), key=lambda pair: -pair[1])]
            keep = set(ranked[:limit])
            kept = [line.raw for n, line in enumerate(lines) if n in keep or line.entry is None]
            gone = [line.raw for n, line in enumerate(lines) if n not in keep and line.entry is not None]
            moved[stream] = len(gone)
            if not gone:
                continue
            mode = os.fstat(fd).st_mode & 0o777
            target = archive_path(memory_dir, f"{stream}.jsonl.compacted", day)
            ensure_dir(os.path.dirname(target))
            write_atomic(target, b"".join(gone), fsync=True, mode=mode)  # durable before the stream is cut
            write_atomic(path, b"".join(kept), fsync=True, mode=mode)
    return moved

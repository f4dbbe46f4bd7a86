"""AID.MEMORY.APPEND.v1, AID.MEMORY.QUERY.v1, AID.MEMORY.SEARCH.v1 and AID.EMBED.TEXT.v1.

A memory stream is ``memory/<stream>.jsonl``: one JSON object per line,
``{"ts": <unix seconds>, "run_id": ..., "request_id": ..., "text": ..., "record": {...}}`` (absent fields
left out).  Appends hold an exclusive ``flock`` on the file while they write one whole line, so every
process appending under the same lock (the autonomic engine should) never interleaves lines.

Vectors come from machina-embed through the toolhost.  EMBED.TEXT fails when the service is not running;
MEMORY.QUERY then falls back to the local hash embedding and says so in ``embedder``.

MEMORY.SEARCH searches every stream (or the ones named) through the memory index the toolhost keeps
(machina.memory.index: BM25, recency, MMR); the index never enters the sandbox.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from typing import IO, Any

from machina.tools.base import ToolContext, ToolFailure

MAX_LINE_BYTES = 1024 * 1024
DEFAULT_TOP_K = 5
_TAIL_BLOCK = 64 * 1024
_TAIL_MAX_BYTES = 64 * 1024 * 1024  # a query never reads more than this much of a stream


def memory_append(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if "record" not in inputs and "text" not in inputs:
        raise ToolFailure("give a record (an object) or a text to append")
    entry: dict[str, Any] = {"ts": round(time.time(), 3)}
    for key in ("run_id", "request_id"):
        if ctx.params.get(key):
            entry[key] = ctx.params[key]
    for key in ("text", "record"):
        if key in inputs:
            entry[key] = inputs[key]
    line = (json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    if len(line) > MAX_LINE_BYTES:
        raise ToolFailure(f"record is {len(line)} bytes; a memory line holds at most {MAX_LINE_BYTES}")
    stream = ctx.open_stream(inputs["stream"], "append")
    assert stream is not None
    with stream:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
        try:
            offset = os.lseek(stream.fileno(), 0, os.SEEK_END)
            stream.write(line)
            stream.flush()
            if ctx.params.get("fsync"):
                os.fsync(stream.fileno())
        finally:
            fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
    return {"stream": inputs["stream"], "offset": offset, "bytes": len(line)}


def memory_query(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    stream = ctx.open_stream(inputs["stream"], "read")
    if stream is None:
        return {"stream": inputs["stream"], "query": inputs["query"], "results": [], "scanned": 0, "embedder": ""}
    with stream:
        entries = tail_entries(stream, ctx.params["max_records"])
    if not entries:
        return {"stream": inputs["stream"], "query": inputs["query"], "results": [], "scanned": 0, "embedder": ""}
    vectors, embedder = ctx.embed([inputs["query"]] + [entry_text(e) for e in entries], fallback=True)
    query, candidates = vectors[0], vectors[1:]
    scored = sorted(
        ((sum(a * b for a, b in zip(query, vec, strict=True)), i) for i, vec in enumerate(candidates)),
        key=lambda pair: (-pair[0], -pair[1]),  # best first; newer first among equals
    )
    top = scored[: inputs.get("top_k", DEFAULT_TOP_K)]
    results = [{"score": round(score, 6), **entries[i]} for score, i in top]
    return {
        "stream": inputs["stream"],
        "query": inputs["query"],
        "results": results,
        "scanned": len(entries),
        "embedder": embedder,
    }


def memory_search(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    result, _ = ctx.host(
        "memory_search",
        query=inputs["query"],
        streams=inputs.get("streams", []),
        top_k=inputs.get("top_k", DEFAULT_TOP_K),
        half_life_days=inputs.get("half_life_days", 7.0),
    )
    hits = result["hits"]
    return {"query": inputs["query"], "results": hits, "count": len(hits)}


def embed_text(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    vectors, embedder = ctx.embed([inputs["text"]], fallback=False)
    return {"vector": vectors[0], "dim": len(vectors[0]), "embedder": embedder}


def entry_text(entry: dict[str, Any]) -> str:
    if isinstance(entry.get("text"), str):
        return str(entry["text"])
    return json.dumps(entry.get("record", entry), sort_keys=True, ensure_ascii=False)


def tail_entries(handle: IO[bytes], limit: int) -> list[dict[str, Any]]:
    """The last ``limit`` well-formed JSON-object lines, oldest first (a torn or foreign line is skipped)."""
    end = os.lseek(handle.fileno(), 0, os.SEEK_END)
    start = end
    chunks: list[bytes] = []
    newlines = 0
    while start > 0 and newlines <= limit and end - start < _TAIL_MAX_BYTES:
        step = min(_TAIL_BLOCK, start)
        start -= step
        chunk = os.pread(handle.fileno(), step, start)
        newlines += chunk.count(b"\n")
        chunks.append(chunk)
    lines = b"".join(reversed(chunks)).split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line may be cut
    entries = []
    for raw in lines[-(limit + 1) :]:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries[-limit:]

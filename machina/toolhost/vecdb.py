"""AID.VECDB.UPSERT.v1 and AID.VECDB.QUERY.v1: small vector collections kept by the toolhost under the root.

A collection is one file, ``state/vecdb/<name>.npz``: ``vectors`` (float32, one unit-length row per item)
and ``items`` (UTF-8 JSON: id, text, metadata of each row, and the embedder that made the vectors).  It is
rewritten atomically on every upsert, under a lock; the suite's ``state/`` is out of every tool's reach, so
only these two tools change a collection.  An item brings its vector, or a text that machina-embed turns
into one (the local hash embedding when the service is down; the reply says which).  A collection's
dimension is fixed by its first item.

Queries rank by cosine similarity: numpy, or cupy where a GPU and cupy are there (``backend`` says which).
Nothing here runs code from a caller: the tools move numbers and JSON.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from machina.fsutil import ensure_dir, write_atomic
from machina.tools.base import ToolFailure

log = logging.getLogger(__name__)

NAME = re.compile(r"[a-z0-9_]{1,32}")
MAX_ITEMS = 20_000
MAX_DIM = 4096
GPU_DEVICE = "/dev/nvidia0"

Embedder = Callable[[list[str], bool], tuple[list[list[float]], str]]


def array_module() -> tuple[Any, str]:
    """cupy when a GPU device and cupy are both there, else numpy."""
    if os.path.exists(GPU_DEVICE):
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
            return cupy, "cupy"
        except Exception as exc:  # no cupy, or a driver that does not answer: numpy does the same job
            log.debug("vector queries use numpy: %s", exc)
    return np, "numpy"


class VectorStore:
    def __init__(self, state_dir: str, embed: Embedder, *, fsync: bool = True) -> None:
        self.dir = os.path.join(state_dir, "vecdb")
        self.embed = embed
        self.fsync = fsync
        self._lock = threading.Lock()

    def upsert(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = _collection(inputs["collection"])
        items = inputs["items"]
        vectors, embedder = self._vectors_of(items)
        with self._lock:
            matrix, meta = self._load(name)
            dim = matrix.shape[1] if len(meta["items"]) else vectors.shape[1]
            if vectors.shape[1] != dim:
                raise ToolFailure(f"collection {name} holds {dim}-dimensional vectors, not {vectors.shape[1]}")
            index = {item["id"]: i for i, item in enumerate(meta["items"])}
            rows = list(matrix) if len(meta["items"]) else []
            replaced = 0
            for item, vector in zip(items, vectors, strict=True):
                record = {"id": item["id"], "text": item.get("text"), "metadata": item.get("metadata", {})}
                if item["id"] in index:
                    rows[index[item["id"]]] = vector
                    meta["items"][index[item["id"]]] = record
                    replaced += 1
                else:
                    index[item["id"]] = len(rows)
                    rows.append(vector)
                    meta["items"].append(record)
            if len(rows) > MAX_ITEMS:
                raise ToolFailure(f"collection {name} would hold {len(rows)} items; at most {MAX_ITEMS}")
            if embedder:
                meta["embedder"] = embedder
            self._save(name, np.asarray(rows, dtype=np.float32).reshape(len(rows), dim), meta)
        return {
            "collection": name,
            "upserted": len(items),
            "replaced": replaced,
            "count": len(rows),
            "dim": dim,
            "embedder": embedder or None,
        }

    def query(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = _collection(inputs["collection"])
        if ("vector" in inputs) == ("text" in inputs):
            raise ToolFailure("give vector or text to query with, not both")
        probe, _ = self._vectors_of([inputs])
        with self._lock:
            matrix, meta = self._load(name)
        if not meta["items"]:
            return {"collection": name, "results": [], "count": 0, "backend": None}
        if probe.shape[1] != matrix.shape[1]:
            raise ToolFailure(f"collection {name} holds {matrix.shape[1]}-dimensional vectors, not {probe.shape[1]}")
        wanted = inputs.get("filter") or {}
        keep = [i for i, item in enumerate(meta["items"]) if _matches(item.get("metadata") or {}, wanted)]
        if not keep:
            return {"collection": name, "results": [], "count": 0, "backend": None}
        xp, backend = array_module()
        scores = xp.asarray(matrix[keep]) @ xp.asarray(probe[0])
        scores = scores.get() if backend == "cupy" else scores
        order = np.argsort(-scores, kind="stable")[: inputs.get("top_k", 5)]
        results = [{**meta["items"][keep[i]], "score": round(float(scores[i]), 6)} for i in order]
        return {"collection": name, "results": results, "count": len(results), "backend": backend}

    # --- vectors and files ------------------------------------------------------------------------------

    def _vectors_of(self, items: list[dict[str, Any]]) -> tuple[np.ndarray, str]:
        """Unit-length float32 rows: the items' own vectors, or embeddings of their texts."""
        texts = [i for i, item in enumerate(items) if "vector" not in item]
        for i in texts:
            if not isinstance(items[i].get("text"), str) or not items[i]["text"]:
                raise ToolFailure(f"item {items[i].get('id', i)!r}: give a vector or a text")
        embedded: dict[int, list[float]] = {}
        embedder = ""
        if texts:
            vectors, embedder = self.embed([items[i]["text"] for i in texts], True)
            embedded = dict(zip(texts, vectors, strict=True))
        rows = [items[i]["vector"] if i not in embedded else embedded[i] for i in range(len(items))]
        dims = {len(r) for r in rows}
        if len(dims) != 1 or not 1 <= dims.pop() <= MAX_DIM:
            raise ToolFailure(f"vectors must all have the same dimension, 1 to {MAX_DIM}")
        matrix = np.asarray(rows, dtype=np.float64)
        if not np.all(np.isfinite(matrix)):
            raise ToolFailure("vectors must hold finite numbers")
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0):
            raise ToolFailure("a zero vector has no direction to compare")
        return (matrix / norms[:, None]).astype(np.float32), embedder

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name + ".npz")

    def _load(self, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        try:
            with np.load(self._path(name), allow_pickle=False) as archive:
                matrix = archive["vectors"]
                meta = json.loads(archive["items"].tobytes().decode("utf-8"))
        except FileNotFoundError:
            return np.zeros((0, 0), dtype=np.float32), {"items": []}
        except (OSError, ValueError, KeyError) as exc:
            raise ToolFailure(f"collection {name} cannot be read: {exc}") from None
        if matrix.ndim != 2 or len(meta.get("items", [])) != matrix.shape[0]:
            raise ToolFailure(f"collection {name} is damaged: {matrix.shape[0]} vectors for its items")
        return matrix, meta

    def _save(self, name: str, matrix: np.ndarray, meta: dict[str, Any]) -> None:
        ensure_dir(self.dir)
        items = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, vectors=matrix, items=items)
        write_atomic(self._path(name), buffer.getvalue(), fsync=self.fsync)


def _collection(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ToolFailure(f"{name!r} is not a collection name (a-z, 0-9 and _, 1 to 32 characters)")
    return name


def _matches(metadata: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(metadata.get(key) == value for key, value in wanted.items())

"""A rebuildable search index over the memory streams: SQLite FTS5 (BM25), recency and MMR.

The streams are the truth; the index (``state/memory/index.sqlite3``) can be deleted at any time and is
rebuilt from them.  :meth:`MemoryIndex.sync` indexes what was appended since the last sync; a stream that
was rewritten (rotation, ``reindex --apply``) is noticed by its inode, a shrunk size or a changed head and
indexed again from the start.

Scores: BM25 from FTS5 (normalised to 0..1 within the candidates), optionally blended with the cosine
similarity of embeddings, plus a recency term ``2^(-age/half_life)``; the final pick is
MMR (maximal marginal relevance), so five near-identical notes do not fill all five places; identical
texts count once.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir
from machina.memory.streams import entry_text, read_lines, stream_names, stream_path

SCHEMA_VERSION = "1"
HEAD_BYTES = 4096
RELEVANCE_WEIGHT = 0.75  # the rest is recency
MMR_LAMBDA = 0.7  # 1.0 = pure relevance, 0.0 = pure diversity
DEFAULT_HALF_LIFE_DAYS = 7.0
CANDIDATES_PER_RESULT = 8
_TOKEN = re.compile(r"\w+", re.UNICODE)

Embedder = Callable[[list[str]], list[list[float]]]

_DDL = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams(
    stream TEXT PRIMARY KEY, inode INTEGER NOT NULL, size INTEGER NOT NULL, head TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY, stream TEXT NOT NULL, offset INTEGER NOT NULL, ts REAL NOT NULL,
    text TEXT NOT NULL, line TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_by_stream ON entries(stream, offset);
CREATE VIRTUAL TABLE IF NOT EXISTS entries_fts USING fts5(text, content='entries', content_rowid='id');
"""


@dataclass(frozen=True)
class Hit:
    stream: str
    offset: int
    ts: float
    text: str
    line: str  # the raw JSON line
    score: float


@dataclass(frozen=True)
class StreamState:
    inode: int
    size: int
    head: str


def index_path(state_dir: str) -> str:
    return os.path.join(state_dir, "memory", "index.sqlite3")


def stream_state(path: str, size: int | None = None) -> StreamState:
    """Identity of a stream file as of ``size`` bytes (default: all of it): inode, size, and a digest of its
    first bytes up to that size, so that appends keep the digest and a rewrite changes it."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        size = st.st_size if size is None else size
        head = hashlib.sha256(handle.read(min(HEAD_BYTES, size))).hexdigest()
    return StreamState(st.st_ino, size, head)


def fts_query(text: str) -> str:
    """User text as an FTS5 query: each word quoted (no FTS syntax gets through), any word may match."""
    words = dict.fromkeys(w.lower() for w in _TOKEN.findall(text))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


class MemoryIndex:
    def __init__(self, memory_dir: str, state_dir: str, *, clock: Clock = SYSTEM_CLOCK, readonly: bool = False) -> None:
        self.memory_dir = memory_dir
        self.path = index_path(state_dir)
        self.clock = clock
        self.readonly = readonly  # for checks on a root mounted read-only: no sync, no schema changes
        self._db: sqlite3.Connection | None = None

    # --- lifecycle ------------------------------------------------------------------------------------

    def open(self) -> MemoryIndex:
        if self.readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
            return self
        ensure_dir(os.path.dirname(self.path))
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_DDL)
        version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None:
            db.execute("INSERT INTO meta(key, value) VALUES('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            db.close()
            os.unlink(self.path)  # an index is rebuildable: an old layout is simply made again
            return self.open()
        self._db = db
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> MemoryIndex:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "MemoryIndex used before open()"
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- keeping in step with the streams -------------------------------------------------------------

    def indexed(self) -> dict[str, StreamState]:
        rows = self.db.execute("SELECT stream, inode, size, head FROM streams")
        return {s: StreamState(i, n, h) for s, i, n, h in rows}

    def sync(self) -> int:
        """Index what changed since the last sync; returns the number of lines added."""
        added = 0
        present = set(stream_names(self.memory_dir))
        known = self.indexed()
        for gone in sorted(set(known) - present):
            with self._transaction():
                self._forget(gone)
        for stream in sorted(present):
            added += self._sync_stream(stream, known.get(stream))
        return added

    def rebuild(self) -> int:
        with self._transaction() as db:
            db.execute("DELETE FROM streams")
            db.execute("DELETE FROM entries")
            db.execute("INSERT INTO entries_fts(entries_fts) VALUES('delete-all')")
        return self.sync()

    def _sync_stream(self, stream: str, known: StreamState | None) -> int:
        path = stream_path(self.memory_dir, stream)
        now = stream_state(path)
        start = 0
        if known is not None:
            same_file = known.inode == now.inode and now.size >= known.size
            if same_file and stream_state(path, known.size).head == known.head:
                if now.size == known.size:
                    return 0
                start = known.size
        added, end = 0, start
        with self._transaction() as db:
            if start == 0:
                self._forget(stream)
            for line in read_lines(path, start):
                if not line.raw.endswith(b"\n"):
                    break  # a line still being written: the next sync takes it
                end = line.offset + len(line.raw)
                if line.entry is None:
                    continue
                ts = line.entry.get("ts")
                ts = float(ts) if isinstance(ts, int | float) and math.isfinite(ts) else 0.0
                text = entry_text(line.entry)
                row = db.execute(
                    "INSERT INTO entries(stream, offset, ts, text, line) VALUES(?, ?, ?, ?, ?)",
                    (stream, line.offset, ts, text, line.raw.decode("utf-8", "replace").rstrip("\n")),
                )
                db.execute("INSERT INTO entries_fts(rowid, text) VALUES(?, ?)", (row.lastrowid, text))
                added += 1
            state = stream_state(path, end)
            db.execute(
                "INSERT OR REPLACE INTO streams(stream, inode, size, head) VALUES(?, ?, ?, ?)",
                (stream, state.inode, end, state.head),
            )
        return added

    def _forget(self, stream: str) -> None:
        rows = self.db.execute("SELECT id, text FROM entries WHERE stream = ?", (stream,)).fetchall()
        for rowid, text in rows:
            self.db.execute("INSERT INTO entries_fts(entries_fts, rowid, text) VALUES('delete', ?, ?)", (rowid, text))
        self.db.execute("DELETE FROM entries WHERE stream = ?", (stream,))
        self.db.execute("DELETE FROM streams WHERE stream = ?", (stream,))

    # --- queries ----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT stream, COUNT(*), MIN(ts), MAX(ts) FROM entries GROUP BY stream")
        return {s: {"entries": n, "oldest": lo, "newest": hi} for s, n, lo, hi in rows}

    def offsets(self, stream: str) -> list[int]:
        return [o for (o,) in self.db.execute("SELECT offset FROM entries WHERE stream = ? ORDER BY offset", (stream,))]

    def query(
        self,
        text: str,
        *,
        streams: Sequence[str] = (),
        top_k: int = 5,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
        embed: Embedder | None = None,
    ) -> list[Hit]:
        """The ``top_k`` best entries for ``text``: BM25 (+ embeddings) and recency, diversified by MMR."""
        match = fts_query(text)
        if not match or top_k <= 0:
            return []
        sql = (
            "SELECT e.stream, e.offset, e.ts, e.text, e.line, bm25(entries_fts) FROM entries_fts "
            "JOIN entries e ON e.id = entries_fts.rowid WHERE entries_fts MATCH ?"
        )
        args: list[Any] = [match]
        if streams:
            sql += f" AND e.stream IN ({','.join('?' * len(streams))})"
            args.extend(streams)
        sql += " ORDER BY bm25(entries_fts) LIMIT ?"
        args.append(top_k * CANDIDATES_PER_RESULT)
        rows = _distinct_texts(self.db.execute(sql, args).fetchall())
        if not rows:
            return []
        relevance = _normalised([-r[5] for r in rows])  # FTS5's bm25() is lower-is-better
        vectors: list[list[float]] | None = None
        if embed is not None:
            vectors = embed([text] + [r[3] for r in rows])
            query_vec, vectors = vectors[0], vectors[1:]
            relevance = [(a + max(0.0, _cosine(query_vec, v))) / 2 for a, v in zip(relevance, vectors, strict=True)]
        now = self.clock.time()
        scores = [
            RELEVANCE_WEIGHT * rel + (1 - RELEVANCE_WEIGHT) * _recency(now - r[2], half_life_days)
            for rel, r in zip(relevance, rows, strict=True)
        ]
        picked = mmr(scores, [r[3] for r in rows], top_k, vectors)
        return [Hit(rows[i][0], rows[i][1], rows[i][2], rows[i][3], rows[i][4], round(scores[i], 6)) for i in picked]


def _distinct_texts(rows: list[Any]) -> list[Any]:
    """One row per text (the best-ranked, rows come best first): a note written twice is one answer."""
    seen: set[str] = set()
    distinct = []
    for row in rows:
        if row[3] not in seen:
            seen.add(row[3])
            distinct.append(row)
    return distinct


def _normalised(values: list[float]) -> list[float]:
    """Scale to 0..1 by the best candidate (not min-max: the weakest match still matched)."""
    top = max(values)
    if top <= 0:
        return [1.0 for _ in values]
    return [max(0.0, v) / top for v in values]


def _recency(age_seconds: float, half_life_days: float) -> float:
    age_days = max(0.0, age_seconds) / 86400
    return float(2 ** (-age_days / half_life_days))


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def mmr(scores: list[float], texts: list[str], k: int, vectors: list[list[float]] | None = None) -> list[int]:
    """Indices of ``k`` items by maximal marginal relevance (similarity: cosine, else word overlap)."""
    words = [set(w.lower() for w in _TOKEN.findall(t)) for t in texts]

    def similarity(i: int, j: int) -> float:
        return _cosine(vectors[i], vectors[j]) if vectors is not None else _jaccard(words[i], words[j])

    chosen: list[int] = []
    left = list(range(len(scores)))
    while left and len(chosen) < k:
        best = max(
            left,
            key=lambda i: (
                MMR_LAMBDA * scores[i] - (1 - MMR_LAMBDA) * max((similarity(i, j) for j in chosen), default=0.0),
                -i,
            ),
        )
        chosen.append(best)
        left.remove(best)
    return chosen

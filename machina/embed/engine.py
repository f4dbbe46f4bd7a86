"""Embedding and centroid selection in one process: what the machina-embed service serves, and what
``machina embed --local`` / ``machina select --local`` run in place.

A tool's centroid is the normalised mean of the embeddings of its description, its tags (with its name),
and the goal texts of its recorded successes (:class:`~machina.embed.history.SuccessHistory`).  A goal is
embedded the same way and the menu's tools are ranked by cosine similarity (:mod:`machina.embed.ranking`).
Centroids are cached per embedding space (``hash`` or ``cmd``) and rebuilt when a tool's menu text or
history changes; when the command fails for a selection, that whole selection runs in ``hash`` space.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from machina.embed.arrays import array_module, to_host
from machina.embed.hashing import hash_embed
from machina.embed.history import SuccessHistory
from machina.embed.providers import CommandProvider
from machina.embed.ranking import CentroidMatrix, normalise_rows, rank_scores
from machina.exitcodes import ExitCode, MachinaError

log = logging.getLogger(__name__)

MATRIX_CACHE = 4  # menus whose centroid matrix stays on the device (a worker repeats its menu every step)
SCORE_DIGITS = 6


class BadRequest(MachinaError):
    exit_code = ExitCode.DATAERR


@dataclass(frozen=True)
class MenuItem:
    sid: str
    aid: str
    name: str
    tags: tuple[str, ...]
    description: str

    @classmethod
    def parse(cls, raw: Any, position: int) -> MenuItem:
        if not isinstance(raw, dict):
            raise BadRequest(f"menu[{position}] must be an object")
        values = {}
        for key in ("sid", "aid"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise BadRequest(f"menu[{position}].{key} must be a non-empty string")
            values[key] = raw[key]
        for key in ("name", "description"):
            if not isinstance(raw.get(key, ""), str):
                raise BadRequest(f"menu[{position}].{key} must be a string")
        tags = raw.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest(f"menu[{position}].tags must be a list of strings")
        return cls(values["sid"], values["aid"], raw.get("name", ""), tuple(tags), raw.get("description", ""))

    def tag_text(self) -> str:
        """Tags without their ``tag.`` prefix, and the tool's name: ``log error scan error_scan``."""
        words = [t.removeprefix("tag.").replace(".", " ") for t in self.tags]
        return " ".join([*words, self.name])


def parse_menu(menu: Any, max_items: int) -> list[MenuItem]:
    if not isinstance(menu, list):
        raise BadRequest("menu must be a list of {sid, aid, name, tags, description} objects")
    if len(menu) > max_items:
        raise BadRequest(f"menu has {len(menu)} items, more than MACHINA_EMBED_MAX_TEXTS={max_items}")
    items = [MenuItem.parse(raw, i) for i, raw in enumerate(menu)]
    seen: set[str] = set()
    for item in items:
        if item.sid in seen:
            raise BadRequest(f"menu sid {item.sid!r} appears twice")
        seen.add(item.sid)
    return items


def check_texts(texts: Any, what: str, max_texts: int) -> list[str]:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(f"{what} must be a list of strings")
    if len(texts) > max_texts:
        raise BadRequest(f"{len(texts)} texts, more than MACHINA_EMBED_MAX_TEXTS={max_texts}")
    return texts


@dataclass(frozen=True)
class EngineSettings:
    dim: int
    floor: float
    max_chars: int
    max_texts: int
    cache_entries: int

    @classmethod
    def from_config(cls, cfg: Any) -> EngineSettings:
        return cls(
            dim=cfg["MACHINA_GPU_DIM"],
            floor=cfg["MACHINA_EMBED_MIN_SCORE"],
            max_chars=cfg["MACHINA_EMBED_MAX_CHARS"],
            max_texts=cfg["MACHINA_EMBED_MAX_TEXTS"],
            cache_entries=cfg["MACHINA_EMBED_CACHE_ENTRIES"],
        )


CentroidKey = tuple[str, str, str, int]  # (aid, digest of the menu text, space, history version)


class EmbedEngine:
    """Thread-safe: the service calls it from one thread per connection."""

    def __init__(
        self,
        settings: EngineSettings,
        history: SuccessHistory,
        command: CommandProvider | None = None,
        xp: ModuleType | None = None,
    ) -> None:
        self.settings = settings
        self.history = history
        self.command = command
        self.xp = xp or array_module()
        self._centroids: OrderedDict[CentroidKey, np.ndarray] = OrderedDict()
        self._matrices: OrderedDict[tuple[CentroidKey, ...], CentroidMatrix] = OrderedDict()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    @property
    def provider(self) -> str:
        return "cmd" if self.command else "hash"

    # --- embedding ---------------------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[np.ndarray, str]:
        """Unit vectors for ``texts`` and the space they are in: ``cmd``, or ``hash`` (configured or fallen back)."""
        texts = [t[: self.settings.max_chars] for t in texts]
        self._count("texts_embedded", len(texts))
        if self.command is not None:
            vectors = self.command.try_embed(texts)
            if vectors is not None:
                return vectors, "cmd"
            self._count("fallbacks")
        return hash_embed(texts, self.settings.dim), "hash"

    def _embed_in(self, space: str, texts: list[str]) -> np.ndarray | None:
        texts = [t[: self.settings.max_chars] for t in texts]
        if space == "hash":
            return hash_embed(texts, self.settings.dim)
        assert self.command is not None
        return self.command.try_embed(texts)

    # --- selection ---------------------------------------------------------------------------------------

    def select(self, goal: str, menu: Sequence[MenuItem], top_k: int = 1) -> dict[str, Any]:
        """Rank ``menu`` for ``goal``: picks best first (ties by menu order), scores by sid, the floor verdict."""
        return self.select_many([goal], menu, top_k)[0]

    def select_many(self, goals: Sequence[str], menu: Sequence[MenuItem], top_k: int = 1) -> list[dict[str, Any]]:
        """:meth:`select` for several goals against one menu: one provider call and one matrix product."""
        self._count("selections", len(goals))
        if not menu or not goals:
            return [self._reply([], {}, self.provider) for _ in goals]
        cut = [goal[: self.settings.max_chars] for goal in goals]
        goal_vectors, space, keys, centroids = self._goals_and_centroids(cut, menu)
        matrix = self._matrix(keys, centroids)
        scores = matrix.scores(goal_vectors)
        host_scores = to_host(scores)
        replies = []
        for ranked, row in zip(rank_scores(scores, top_k, matrix.xp), host_scores, strict=True):
            picks = [
                {"sid": menu[i].sid, "aid": menu[i].aid, "score": round(score, SCORE_DIGITS)} for i, score in ranked
            ]
            by_sid = {item.sid: round(float(s), SCORE_DIGITS) for item, s in zip(menu, row, strict=True)}
            replies.append(self._reply(picks, by_sid, space))
        return replies

    def _reply(self, picks: list[dict[str, Any]], scores: dict[str, float], space: str) -> dict[str, Any]:
        below = not picks or picks[0]["score"] < self.settings.floor
        if below:
            self._count("below_floor")
        return {
            "picks": picks,
            "scores": scores,
            "below_floor": below,
            "floor": self.settings.floor,
            "provider": space,
            "fallback": space != self.provider,
        }

    def _goals_and_centroids(
        self, goals: list[str], menu: Sequence[MenuItem]
    ) -> tuple[np.ndarray, str, tuple[CentroidKey, ...], dict[CentroidKey, np.ndarray]]:
        """Embed the goals and every centroid not cached, in one provider call and one space."""
        spaces = ("cmd", "hash") if self.command is not None else ("hash",)
        for space in spaces:
            keys = tuple(self._key(item, space) for item in menu)
            centroids, missing = self._lookup(keys, menu)
            docs = [self._documents(item) for item in missing.values()]
            texts = [*goals, *(text for item_docs in docs for text in item_docs)]
            vectors = self._embed_in(space, texts)
            if vectors is None:
                self._count("fallbacks")
                continue
            self._count("texts_embedded", len(texts))
            start = len(goals)
            for key, item_docs in zip(missing, docs, strict=True):
                block = vectors[start : start + len(item_docs)]
                start += len(item_docs)
                centroids[key] = normalise_rows(block.mean(axis=0, keepdims=True))[0]
                self._remember(key, centroids[key])
            return vectors[: len(goals)], space, keys, centroids
        raise AssertionError("the hash space never fails")

    def _documents(self, item: MenuItem) -> list[str]:
        texts = [item.description, item.tag_text(), *self.history.goals(item.aid)]
        return [t[: self.settings.max_chars] for t in texts]

    def _key(self, item: MenuItem, space: str) -> CentroidKey:
        text = "\x1f".join((item.name, item.description, *item.tags))
        digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        return (item.aid, digest, space, self.history.successes(item.aid))

    def _lookup(
        self, keys: tuple[CentroidKey, ...], menu: Sequence[MenuItem]
    ) -> tuple[dict[CentroidKey, np.ndarray], dict[CentroidKey, MenuItem]]:
        """The cached centroids of ``keys`` (a snapshot: later evictions cannot hurt) and the items lacking one."""
        found: dict[CentroidKey, np.ndarray] = {}
        missing: dict[CentroidKey, MenuItem] = {}
        with self._lock:
            for key, item in zip(keys, menu, strict=True):
                centroid = self._centroids.get(key)
                if centroid is not None:
                    found[key] = centroid
                    self._centroids.move_to_end(key)
                elif key not in missing:
                    missing[key] = item
        return found, missing

    def _remember(self, key: CentroidKey, centroid: np.ndarray) -> None:
        with self._lock:
            self._centroids[key] = centroid
            self._centroids.move_to_end(key)
            while len(self._centroids) > self.settings.cache_entries:
                self._centroids.popitem(last=False)

    def _matrix(self, keys: tuple[CentroidKey, ...], centroids: dict[CentroidKey, np.ndarray]) -> CentroidMatrix:
        with self._lock:
            matrix = self._matrices.get(keys)
            if matrix is not None:
                self._matrices.move_to_end(keys)
                return matrix
        matrix = CentroidMatrix(np.stack([centroids[key] for key in keys]), self.xp)
        with self._lock:
            self._matrices[keys] = matrix
            while len(self._matrices) > MATRIX_CACHE:
                self._matrices.popitem(last=False)
        return matrix

    # --- learning and stats ------------------------------------------------------------------------------

    def record_success(self, aid: str, goal: str) -> int:
        """Add ``goal`` to ``aid``'s successes (durably); its centroid is rebuilt on next use."""
        self._count("successes")
        return self.history.add(aid, goal[: self.settings.max_chars])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self.counts)
            cached = len(self._centroids)
        out: dict[str, Any] = {
            "provider": self.provider,
            "dim": self.settings.dim,
            "floor": self.settings.floor,
            "backend": self.xp.__name__,
            "centroids_cached": cached,
            "tools_with_history": self.history.tools(),
            **{k: counts.get(k, 0) for k in ("texts_embedded", "selections", "below_floor", "successes", "fallbacks")},
        }
        if self.command is not None:
            out["command"] = self.command.counters()
        return out

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

"""The ``hash`` provider: a feature-hashing embedding of words, word pairs and character n-grams.

Each feature (a word, two adjacent words, or a 3- or 4-character piece of a word with its boundaries marked)
is hashed with BLAKE2b, a stable hash (Python's ``hash()`` is salted per process), into one of ``dim``
buckets with a sign taken from another bit of the same digest (signed feature hashing, Weinberger et al.
2009): collisions then cancel on average instead of piling up.  Texts that share words or word stems share
features and so land close together; a text is not hashed as a whole, which would scatter near-identical
texts at random.

Weights: every word counts 1, each adjacent word pair 0.5, and the character pieces of a word share 0.5
between them, so a long word does not outweigh a short one.  Common English function words are dropped:
they would make unrelated sentences look alike.  A text with no features embeds to the zero vector.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

from machina.embed.ranking import normalise_rows

WORD_WEIGHT = 1.0
PAIR_WEIGHT = 0.5
CHARS_WEIGHT = 0.5  # shared by all character n-grams of one word
CHAR_NGRAMS = (3, 4)
_PERSON = b"machina-embed1"  # BLAKE2b personalisation: our buckets differ from any other use of the hash

_WORD = re.compile(r"[^\W_]+")
_STOPWORDS_TEXT = """a an and are as at be been by can could do does for from has have how i if in into is it its me my
no not of on or our please so than that the their them then there these this those to us was we were
what when where which who why will with would you your"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def tokens(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters and digits; ``_`` and punctuation split), stopwords removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [w for w in _WORD.findall(folded) if w not in STOPWORDS]


@functools.lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8, person=_PERSON).digest(), "little")
    return digest % dim, (1.0 if digest >> 63 else -1.0)


def features(words: list[str]) -> Iterable[tuple[str, float]]:
    """The weighted features of a token list (kinds are prefixed so a word never collides with an n-gram)."""
    for word in words:
        yield "w:" + word, WORD_WEIGHT
        marked = f"<{word}>"
        pieces = [marked[i : i + n] for n in CHAR_NGRAMS for i in range(len(marked) - n + 1)]
        if pieces:
            share = CHARS_WEIGHT / len(pieces)
            for piece in pieces:
                yield "c:" + piece, share
    for left, right in itertools.pairwise(words):
        yield f"p:{left} {right}", PAIR_WEIGHT


def hash_embed(texts: list[str], dim: int) -> np.ndarray:
    """Embed ``texts`` as a ``(len(texts), dim)`` float32 array whose non-zero rows have unit L2 norm.

    Identical across processes, runs and machines for the same text and dimension.
    """
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for row, text in enumerate(texts):
        for feature, weight in features(tokens(text)):
            index, sign = _bucket(feature, dim)
            out[row, index] += sign * weight
    return normalise_rows(out)

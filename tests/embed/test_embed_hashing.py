"""The hash provider: dimension, unit norm, determinism across processes, and similarity that means something."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from machina.embed.hashing import hash_embed, tokens

TEXTS = ["scan the application log for errors", "Fetch https://example.com/index.html", "", "the of and"]


@pytest.mark.parametrize("dim", [2, 128, 384, 1000])
def test_shape_dtype_and_unit_rows(dim: int) -> None:
    vectors = hash_embed(TEXTS, dim)
    assert vectors.shape == (len(TEXTS), dim)
    assert vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(norms[:2], 1.0, rtol=1e-6)
    assert norms[2] == 0.0 and norms[3] == 0.0  # no words (only stopwords): the zero vector, not noise


def test_no_texts_gives_an_empty_matrix() -> None:
    assert hash_embed([], 64).shape == (0, 64)


def test_dimension_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="dim"):
        hash_embed(["x"], 1)


def test_identical_in_another_process() -> None:
    """A stable hash (BLAKE2b), not Python's per-process salted hash(): another interpreter agrees bit for bit."""
    code = (
        "import sys; from machina.embed.hashing import hash_embed; "
        f"sys.stdout.buffer.write(hash_embed({TEXTS!r}, 128).tobytes())"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, env={"PYTHONHASHSEED": "12345"}
    ).stdout
    assert other == hash_embed(TEXTS, 128).tobytes()


def test_same_text_same_vector_and_order_of_batch_irrelevant() -> None:
    one = hash_embed(["read the config file"], 128)[0]
    batch = hash_embed(["something else", "read the config file"], 128)[1]
    np.testing.assert_array_equal(one, batch)


def test_texts_sharing_words_are_closer_than_unrelated_ones() -> None:
    anchor, related, stem, unrelated = hash_embed(
        [
            "scan the server log for error lines",
            "count error lines in the log",
            "scanning server logs",
            "download a web page over https",
        ],
        128,
    )
    assert anchor @ related > anchor @ unrelated + 0.2
    assert anchor @ stem > anchor @ unrelated + 0.1  # character n-grams: scanning~scan, logs~log


def test_case_punctuation_and_stopwords_do_not_matter() -> None:
    a, b = hash_embed(["Read THE file: notes.txt!", "read file notes txt"], 128)
    assert a @ b == pytest.approx(1.0, abs=1e-6)


def test_tokens_split_identifiers() -> None:
    assert tokens("AID.FILE.READ_v1 error_scan") == ["aid", "file", "read", "v1", "error", "scan"]

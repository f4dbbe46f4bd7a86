"""The shipped model command (tools/embed/embed_minilm.py), run for real when `make setup-model` installed it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from embed_support import GOAL_MENU_MANIFEST, MODEL_COMMAND, bin_env, model_python, run_bin

PYTHON = model_python()
pytestmark = pytest.mark.skipif(
    PYTHON is None, reason="the embedding model is not installed: run `make setup-model` (or set EMBED_MODEL_PYTHON)"
)


def run_model(request: object) -> subprocess.CompletedProcess[str]:
    assert PYTHON is not None
    return subprocess.run(
        [PYTHON, str(MODEL_COMMAND)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # what machina-embed gives it: nothing else
    )


def test_protocol_both_forms_unit_vectors_and_meaningful_similarity() -> None:
    proc = run_model({"texts": ["scan the log for errors", "find error lines in app.log", "bake a cake"], "dim": 384})
    assert proc.returncode == 0, proc.stderr
    vectors = np.array(json.loads(proc.stdout)["embeddings"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert "Loading" not in proc.stderr  # no progress bars in the service's log


def test_refuses_another_dimension_and_bad_input() -> None:
    wrong = run_model({"text": "x", "dim": 128})
    assert wrong.returncode == 65 and "MACHINA_GPU_DIM=384" in wrong.stderr
    bad = run_model(["not", "an", "object"])
    assert bad.returncode == 65


def test_the_service_selects_with_the_model(machina_root: Path, embed_process) -> None:  # type: ignore[no-untyped-def]
    model = {
        "MACHINA_EMBED_PROVIDER": "cmd",
        "MACHINA_EMBED_CMD": f"{PYTHON} {MODEL_COMMAND}",
        "MACHINA_GPU_DIM": "384",
        "MACHINA_EMBED_TIMEOUT_MS": "300000",
        "MACHINA_EMBED_CPU_MS": "0",
    }
    embed_process(**model)
    env = bin_env(MACHINA_ROOT=str(machina_root), **model)
    goal = "is a CUDA device available on this machine?"
    proc = run_bin(
        "machina", "select", "--goal", goal, "--menu", GOAL_MENU_MANIFEST, "--timeout", "300", env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["provider"] == "cmd" and reply["fallback"] is False
    # Both GPU tools answer this goal (GPU_METRICS joined the built-in pack after it was written)
    assert reply["picks"][0]["aid"] in {"AID.GPU_SMOKE.v1", "AID.GPU_METRICS.v1"}, reply["picks"][:3]

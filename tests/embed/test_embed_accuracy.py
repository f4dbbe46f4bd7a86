"""Top-1 accuracy of GPU_CENTROID on a labelled set of goals, with the built-in tools as the menu.

The figures are printed (run with -s to see them, or read the test log); each test asserts a modest floor
the provider clears with a margin, so a regression shows without the test depending on luck.  Chance is
1 in 14.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from embed_support import MODEL_COMMAND, builtin_menu, labelled_goals, model_python, sandbox_policy

from machina.embed.engine import EmbedEngine, EngineSettings, parse_menu
from machina.embed.history import SuccessHistory
from machina.embed.providers import CommandProvider, CommandSpec
from machina.proc import Rlimits

MODEL_DIM = 384


def top1(engine: EmbedEngine) -> tuple[float, list[str]]:
    """Accuracy over the labelled goals, selected in one batch against the built-in menu."""
    goals = labelled_goals()
    replies = engine.select_many([g["goal"] for g in goals], parse_menu(builtin_menu(), 100))
    assert {r["provider"] for r in replies} == {engine.provider}, "the provider fell back; accuracy would be hash's"
    misses = [
        f"{goal['goal']!r} -> {reply['picks'][0]['aid']}"
        for goal, reply in zip(goals, replies, strict=True)
        if reply["picks"][0]["aid"] != goal["aid"]
    ]
    return 1 - len(misses) / len(goals), misses


def report(name: str, accuracy: float, misses: list[str]) -> None:
    print(f"\n[embed accuracy] {name}: top-1 {accuracy:.1%} of {len(labelled_goals())} goals", file=sys.stderr)
    for miss in misses:
        print(f"    miss: {miss}", file=sys.stderr)


def test_labelled_set_is_big_enough_and_uses_only_builtin_tools() -> None:
    goals = labelled_goals()
    assert len(goals) >= 30
    assert {g["aid"] for g in goals} <= {item["aid"] for item in builtin_menu()}


@pytest.mark.parametrize(("dim", "floor"), [(128, 0.45), (384, 0.60)])
def test_hash_top1_accuracy(tmp_path: Path, dim: int, floor: float) -> None:
    engine = EmbedEngine(
        EngineSettings(dim, 0.1, 4096, 20000, 50000), SuccessHistory(str(tmp_path), 256, False), None, np
    )
    accuracy, misses = top1(engine)
    report(f"hash, dim {dim}", accuracy, misses)
    assert accuracy >= floor


def test_model_top1_accuracy(tmp_path: Path) -> None:
    python = model_python()
    if python is None:
        pytest.skip("the embedding model is not installed: run `make setup-model` (or set EMBED_MODEL_PYTHON)")
    command = CommandProvider(
        CommandSpec(
            (python, str(MODEL_COMMAND)), timeout_ms=180000, rlimits=Rlimits(), batch_max=256, sandbox=sandbox_policy()
        ),
        MODEL_DIM,
    )
    engine = EmbedEngine(
        EngineSettings(MODEL_DIM, 0.1, 4096, 20000, 50000), SuccessHistory(str(tmp_path), 256, False), command, np
    )
    accuracy, misses = top1(engine)
    report("all-MiniLM-L6-v2 (cmd), dim 384", accuracy, misses)
    assert command.counters()["ok"] == 1  # goals and tool texts in one run of the command
    assert accuracy >= 0.75

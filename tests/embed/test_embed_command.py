"""The cmd provider against real child processes: the good path, and every failure falling back, counted."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from embed_support import FAKE, sandbox_policy
from fake_embedder import vector

from machina.clock import FakeClock
from machina.embed.providers import FAILURE_REASONS, CommandProvider, CommandSpec
from machina.embed.ranking import normalise_rows
from machina.proc import Rlimits

DIM = 16


def provider(
    mode: str, *, timeout_ms: int = 10000, batch_max: int = 256, clock: FakeClock | None = None, **rlimits: int
) -> CommandProvider:
    argv = (sys.executable, str(FAKE), mode)
    spec = CommandSpec(
        argv,
        timeout_ms,
        Rlimits(**rlimits),
        batch_max,
        breaker_failures=3,
        breaker_cooldown_ms=10000,
        sandbox=sandbox_policy(),
    )
    return CommandProvider(spec, DIM, clock or FakeClock())


def failures(p: CommandProvider) -> dict[str, int]:
    return {k: v for k, v in p.counters()["failures"].items() if v}


def test_good_command_gives_normalised_vectors_in_order() -> None:
    p = provider("good")
    texts = ["alpha", "beta", "gamma"]
    out = p.try_embed(texts)
    assert out is not None and out.shape == (3, DIM)
    np.testing.assert_allclose(out, normalise_rows(np.array([vector(t, DIM) for t in texts])), rtol=1e-6)
    single = p.try_embed(["alpha"])  # the {"text": ...} form of the protocol
    assert single is not None
    np.testing.assert_allclose(single[0], out[0], rtol=1e-6)
    assert p.counters() == {
        "runs": 2,
        "ok": 2,
        "failures": dict.fromkeys(FAILURE_REASONS, 0),
        "skipped": 0,
        "breaker_open": False,
    }


def test_large_requests_are_split_into_batches() -> None:
    p = provider("good", batch_max=2)
    out = p.try_embed([f"text {i}" for i in range(5)])
    assert out is not None and out.shape == (5, DIM)
    assert p.counters()["runs"] == 3


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("exit3", "exit"),
        ("garbage", "garbage"),
        ("dim", "dim"),
        ("count", "count"),
        ("nan", "nan"),
        ("zero", "zero"),
    ],
)
def test_each_failure_mode_is_counted_and_gives_none(mode: str, reason: str) -> None:
    p = provider(mode)
    assert p.try_embed(["one", "two"]) is None
    assert p.try_embed(["one", "two"]) is None
    assert failures(p) == {reason: 2}
    assert p.counters()["ok"] == 0


def test_a_hanging_command_is_killed_at_the_deadline() -> None:
    p = provider("hang", timeout_ms=500)
    started = time.monotonic()
    assert p.try_embed(["x"]) is None
    assert time.monotonic() - started < 5
    assert failures(p) == {"timeout": 1}


def test_cpu_limit_stops_a_runaway_command_before_the_deadline() -> None:
    p = provider("cpu", timeout_ms=30000, cpu_sec=1)
    started = time.monotonic()
    assert p.try_embed(["x"]) is None
    assert time.monotonic() - started < 15  # SIGXCPU/SIGKILL after ~1 s of CPU, not the 30 s deadline
    assert failures(p) == {"exit": 1}


def test_flooding_output_is_capped_not_buffered() -> None:
    p = provider("flood", timeout_ms=1500)
    assert p.try_embed(["x"]) is None
    assert failures(p) == {"timeout": 1}  # output past the cap is discarded until the deadline kills it


def test_a_missing_program_counts_as_spawn() -> None:
    p = CommandProvider(CommandSpec(("/nonexistent/embedder",), 1000, Rlimits(), 8, sandbox=sandbox_policy()), DIM)
    assert p.try_embed(["x"]) is None
    assert failures(p) == {"spawn": 1}


def test_the_command_gets_a_cleared_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACHINA_API_TOKEN", "s3cret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another")
    p = provider("env")
    assert p.try_embed(["x"]) is not None, p.counters()
    assert "MACHINA_API_TOKEN" in os.environ


def test_nofile_limit_is_applied() -> None:
    # NOFILE=3 leaves no descriptor for the interpreter to open its modules: the start fails, counted.
    p = provider("good", nofile=3)
    assert p.try_embed(["x"]) is None
    assert failures(p) == {"exit": 1}


def test_the_breaker_opens_after_failures_in_a_row_and_retries_after_the_cooldown() -> None:
    clock = FakeClock()
    p = provider("exit3", clock=clock)
    for _ in range(3):
        assert p.try_embed(["x"]) is None
    assert p.counters()["breaker_open"] is True and p.counters()["runs"] == 3
    started = time.monotonic()
    assert p.try_embed(["x"]) is None  # not run at all: hash answers at once
    assert time.monotonic() - started < 0.5
    assert p.counters()["runs"] == 3 and p.counters()["skipped"] == 1
    clock.advance(10.001)
    repaired = (sys.executable, str(FAKE), "good")
    p.spec = CommandSpec(repaired, 10000, Rlimits(), 256, 3, 10000, sandbox=sandbox_policy())
    assert p.try_embed(["x"]) is not None
    assert p.counters()["breaker_open"] is False and p.counters()["runs"] == 4


def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    p = provider("exit3")
    good = CommandSpec((sys.executable, str(FAKE), "good"), 10000, Rlimits(), 256, 3, 10000, sandbox=sandbox_policy())
    bad = p.spec
    for spec in (bad, bad, good, bad, bad):
        p.spec = spec
        p.try_embed(["x"])
    assert p.counters()["breaker_open"] is False and p.counters()["failures"]["exit"] == 4


def test_d1_the_embed_command_runs_sandboxed_and_never_sees_the_root(machina_root) -> None:
    from machina import config
    from machina.embed.wiring import command_provider

    env = {
        "MACHINA_ENV_FILE": "/dev/null",
        "MACHINA_ROOT": str(machina_root),
        "MACHINA_EMBED_PROVIDER": "cmd",
        "MACHINA_EMBED_CMD": f"{sys.executable} {FAKE} confined {machina_root}",
        "MACHINA_GPU_DIM": str(DIM),
    }
    p = command_provider(config.load(environ=env))
    assert p is not None and p.try_embed(["alpha"]) is not None, failures(p)
    assert failures(p) == {}


def test_d1_the_embed_sandbox_shows_only_what_the_command_names(tmp_path) -> None:
    from machina.embed.providers import visible_paths

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    model = tmp_path / "model"
    model.mkdir()
    argv = ("/bin/python3", str(FAKE), str(model), str(root / "data"), str(tmp_path), "--fast")
    shown = visible_paths(argv, str(root))
    assert "/" not in shown, "/bin/python3 must not show the whole file system"
    assert str(FAKE.parent) in shown and str(model) in shown
    assert str(root / "data") not in shown and str(tmp_path) not in shown, "never MACHINA_ROOT, inside or above"

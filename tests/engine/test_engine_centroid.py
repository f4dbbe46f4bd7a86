"""MACHINA_SELECTOR=GPU_CENTROID with a real machina-embed service: picks, fallbacks and learning."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, events

from tests.conftest import BIN, bin_env


@pytest.fixture
def embed_service(root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """machina-embed on the root, with the similarity floor ``request.param`` (default -1: always pick)."""
    socket_path = root / "run" / "embed.sock"
    log = open(root / "embed.log", "wb")  # noqa: SIM115 - closed below, after the process
    env = bin_env(MACHINA_EMBED_MIN_SCORE=str(getattr(request, "param", -1)))
    proc = subprocess.Popen([str(BIN / "machina-embed"), "--root", str(root)], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert proc.poll() is None, (root / "embed.log").read_text()
            assert time.monotonic() < deadline, "machina-embed did not start"
            time.sleep(0.05)
        yield root / "state" / "embed_history.json"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_gpu_centroid_picks_and_learns_from_done_runs(make_engine, embed_service: Path) -> None:
    engine = make_engine(MACHINA_SELECTOR="GPU_CENTROID")
    assert engine.selector.name == "GPU_CENTROID"
    result = engine.run(ERROR_SCAN)
    assert result.status == "done"
    assert {s["source"] for s in events(result.log_path, "selection")} == {"GPU_CENTROID"}
    learned = json.loads(embed_service.read_text())["tools"]
    assert learned["AID.ERROR_SCAN.v1"]["successes"] == 1
    assert learned["AID.REPORT_SUMMARY.v1"]["successes"] == 1


@pytest.mark.parametrize("embed_service", [1], indirect=True)
def test_gpu_centroid_below_its_floor_defers_to_the_heuristic(make_engine, embed_service: Path) -> None:
    result = make_engine(MACHINA_SELECTOR="GPU_CENTROID").run(ERROR_SCAN)
    assert result.status == "done"
    assert {s["source"] for s in events(result.log_path, "selection")} == {"HEURISTIC"}


def test_gpu_centroid_without_the_service_defers_to_the_heuristic(make_engine) -> None:
    result = make_engine(MACHINA_SELECTOR="GPU_CENTROID").run(ERROR_SCAN)
    assert result.status == "done"  # a run never fails because machina-embed is down
    assert {s["source"] for s in events(result.log_path, "selection")} == {"HEURISTIC"}


def test_closing_the_engine_closes_its_connection_to_machina_embed(make_engine, embed_service: Path) -> None:
    engine = make_engine(MACHINA_SELECTOR="GPU_CENTROID")
    before = open_sockets()
    assert engine.run(ERROR_SCAN).status == "done"
    assert open_sockets() == before + 1  # the selector's connection, kept for the next run
    engine.close()
    assert open_sockets() == before


def open_sockets() -> int:
    """Sockets this process has open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return count

"""The restart soak at a small count (bench/bench_restart_soak.py runs 200 rounds): every daemon and
``machina up`` survive SIGTERM and SIGKILL + fresh start with nothing left in run/ or $TMPDIR, no process
outliving its parent, and open fds flat under load (issue 19)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina.testing.soak import DAEMONS, Soak

pytestmark = pytest.mark.slow
ROUNDS = 2  # one SIGTERM, one SIGKILL + fresh start, then the closing start and SIGTERM


@pytest.fixture
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    # A short path: Unix socket names are limited to 108 bytes.
    soak = Soak(str(tmp_path_factory.mktemp("soak", numbered=True)))
    yield soak
    soak.close()
    assert soak.leftover_processes() == []


@pytest.mark.parametrize("daemon", DAEMONS)
def test_sigterm_and_sigkill_rounds_leave_nothing(soak: Soak, daemon: str) -> None:
    report = soak.cycle(daemon, ROUNDS)
    assert report.failures == []
    assert (report.cycles, report.term_clean, report.killed, report.ready_after_kill) == (2, 1, 1, 1)
    assert os.listdir(soak.run_dir) == []
    assert os.listdir(soak.tmpdir) == []
    logs = Path(soak.logs)
    if daemon == "toolhost":
        assert "removed " in (logs / "toolhost.log").read_text()  # the killed one's /etc view, swept


@pytest.mark.parametrize("daemon", ["toolhost", "embed", "enqueued"])
def test_open_fds_stay_flat_under_requests(soak: Soak, daemon: str) -> None:
    after_100, after_1000 = soak.fd_figures(daemon, 100, 1000)
    assert after_1000 <= after_100 + 3, (after_100, after_1000)  # a leak per request would add 900

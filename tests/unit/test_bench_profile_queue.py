"""bench/profile_queue.py --stages: every stage of an enqueue is timed, and the queue's code is left as found."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from machina.queue import fscore, fsenqueue
from machina.queue.names import JobNamer
from machina.queue.wal import WalWriter
from machina.root import init_root
from tests.conftest import CHECKOUT


def _profile_queue():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("profile_queue", Path(CHECKOUT) / "bench" / "profile_queue.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_stage_is_timed_and_the_originals_are_put_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile_queue = _profile_queue()
    before = {name: getattr(owner, name) for _, owner, name in profile_queue.STAGES if owner is not None}
    named, appended = vars(JobNamer)["next"], vars(WalWriter)["commit_append"]
    root = tmp_path / "root"
    init_root(str(root))

    assert profile_queue.stages(str(root), fsync=False, jobs=50, replay_s=0.2) == 0

    out = capsys.readouterr().out
    for label, _, _ in profile_queue.STAGES:
        line = next(line for line in out.splitlines() if label in line)
        assert float(re.findall(r"([0-9.]+) us wall", line)[0]) > 0, line  # the stage ran, and was timed
    assert re.search(r"CPU per enqueue +[0-9.]+ us", out)
    assert "replayed alone" in out
    for _, owner, name in profile_queue.STAGES:
        if owner is not None:
            assert getattr(owner, name) is before[name]
    assert vars(JobNamer)["next"] is named and vars(WalWriter)["commit_append"] is appended
    # _write_tmp is QueueCore's: the wrapper put on EnqueueOps is taken away, not left there as a copy.
    assert "_write_tmp" not in vars(fsenqueue.EnqueueOps)
    assert fsenqueue.EnqueueOps._write_tmp is fscore.QueueCore._write_tmp

"""MACHINA_ROOT: the layout of DESIGN.md section 2, created private and idempotently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from machina.root import LAYOUT, QUEUE_STATES, Root, init_root


def test_init_creates_the_whole_layout_private(tmp_path: Path) -> None:
    root = tmp_path / "root"
    created = init_root(str(root))
    assert set(created) == {".", *LAYOUT}
    for rel in (".", *LAYOUT):
        assert (root / rel).stat().st_mode & 0o777 == 0o700, rel
    for state in QUEUE_STATES:
        assert (root / "queue" / state).is_dir()
    assert (root / "queue" / "wal").is_dir()


def test_init_is_idempotent_and_adds_only_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    init_root(str(root))
    (root / "queue" / "inbox" / "job.json").write_text("{}")
    os.rmdir(root / "state")
    assert init_root(str(root)) == ["state"]
    assert (root / "queue" / "inbox" / "job.json").read_text() == "{}"
    assert init_root(str(root)) == []


def test_paths_and_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Root(str(tmp_path))
    assert root.queue_dir("dlq") == str(tmp_path / "queue" / "dlq")
    assert root.socket_path("toolhost") == str(tmp_path / "run" / "toolhost.sock")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/machina:/run/other")
    assert root.runtime_dir == "/run/machina"
    assert Root(str(tmp_path), "/explicit").runtime_dir == "/explicit"
    with pytest.raises(ValueError):
        root.queue_dir("nowhere")
    assert root.missing() == list(LAYOUT)

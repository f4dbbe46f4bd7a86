"""machina-worker's command line, run through /bin/sh as systemd or an operator would."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workerkit import NOOP, Suite

from machina.config import VARIABLES
from tests.conftest import CHECKOUT, bin_env, run_bin


def test_help_names_the_options_and_exit_codes() -> None:
    result = run_bin("machina-worker", "--help")
    assert result.returncode == 0
    for text in ("--id ID", "--root DIR", "MACHINA_JOB_TIMEOUT_MS", "MACHINA_WORKER_CONCURRENCY", "READY=1", "78"):
        assert text in result.stdout


def test_the_id_is_required_and_checked(machina_root: Path) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root))
    missing = run_bin("machina-worker", env=env)
    assert missing.returncode == 64 and "--id" in missing.stderr
    bad = run_bin("machina-worker", "--id", "../1", env=env)
    assert bad.returncode == 64 and "'../1'" in bad.stderr


def test_a_missing_root_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_bin("machina-worker", "--id", "1", env=bin_env(MACHINA_ROOT=str(tmp_path / "nowhere")))
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_a_bad_value_is_a_configuration_error(machina_root: Path) -> None:
    env = bin_env(MACHINA_ROOT=str(machina_root), MACHINA_WORKER_CONCURRENCY="0")
    result = run_bin("machina-worker", "--id", "1", env=env)
    assert result.returncode == 78
    assert "MACHINA_WORKER_CONCURRENCY='0'" in result.stderr


def test_broken_goal_manifests_stop_the_worker_before_it_claims(machina_root: Path) -> None:
    pack = machina_root / "goalpacks" / "broken" / "manifest.json"
    pack.parent.mkdir(parents=True)
    goal = {"goal_id": "goal.BROKEN.v1", "name": "broken", "description": "needs a tool nobody has",
            "candidate_tags": ["tag.none"], "complete_when": {"all_ok": ["AID.NO_SUCH.v1"]}}  # fmt: skip
    pack.write_text(json.dumps({"pack": "broken", "version": 1, "goals": [goal]}))
    result = run_bin("machina-worker", "--id", "1", env=bin_env(MACHINA_ROOT=str(machina_root)))
    assert result.returncode == 78
    assert "manifests have problems" in result.stderr and "goal.BROKEN.v1" in result.stderr


def test_root_option_overrides_the_environment(suite: Suite, tmp_path: Path) -> None:
    name = suite.enqueue(NOOP)
    worker = suite.start_worker(args=("--root", str(suite.root)), MACHINA_ROOT=str(tmp_path / "nowhere"))
    suite.wait_state(name, "done")
    assert worker.stop() == 0


def test_the_man_page_is_lint_clean_and_matches_help() -> None:
    page = CHECKOUT / "man" / "machina-worker.8"
    text = page.read_text()
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (make setup installs it)")
    lint = subprocess.run(["mandoc", "-T", "lint", str(page)], capture_output=True, text=True, timeout=60)
    assert lint.stdout + lint.stderr == ""
    help_text = run_bin("machina-worker", "--help").stdout
    for option in re.findall(r"^\s+(-[\w-]+(?:, --[\w-]+)?)", help_text, re.MULTILINE):
        for name in option.split(", "):
            assert name.replace("-", "\\-") in text, name
    for name in VARIABLES:
        if name.startswith("MACHINA_WORKER_"):
            assert name in text and name in help_text, name

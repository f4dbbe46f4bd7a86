"""The suite's leftover guard (tests/leftovers.py) fails a run that leaves something, and names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import CHECKOUT

LEAKY = """
import os, subprocess, sys, tempfile

def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid

def test_leaks_into_tmpdir():
    with open(os.path.join(tempfile.gettempdir(), "left-by-a-test"), "w") as handle:
        handle.write("x")

def test_leaks_a_machina_dir_into_the_shared_tmp():
    os.mkdir(os.path.join(os.environ["LEAK_INTO"], f"machina-leak.{dead_pid()}"))
"""

TIDY = """
import os, tempfile

def test_cleans_up():
    path = os.path.join(tempfile.gettempdir(), "made-and-removed")
    open(path, "w").close()
    os.unlink(path)
"""


def run_pytest(test_file: Path, shared: Path) -> subprocess.CompletedProcess[str]:
    """A nested pytest run with the suite's conftest as a plugin; its "real" temporary directory is ``shared``."""
    env = {**os.environ, "TMPDIR": str(shared), "LEAK_INTO": str(shared)}
    env.pop("PYTEST_DEBUG_TEMPROOT", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(test_file)],
        env=env,
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_that_leaves_files_fails_and_names_them(tmp_path: Path) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    (tmp_path / "tests_leaky.py").write_text(LEAKY)
    result = run_pytest(tmp_path / "tests_leaky.py", shared)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "the test run left 2 entries behind" in out
    assert "left-by-a-test" in out
    leaked = [name for name in os.listdir(shared) if name.startswith("machina-leak.")]
    assert len(leaked) == 1 and f"{shared}/{leaked[0]}" in out
    shutil.rmtree(shared / leaked[0])
    assert [n for n in os.listdir(shared) if not n.startswith("pytest-of-")] == []  # its private TMPDIR is gone


def test_a_tidy_run_passes(tmp_path: Path) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    (tmp_path / "tests_tidy.py").write_text(TIDY)
    result = run_pytest(tmp_path / "tests_tidy.py", shared)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [n for n in os.listdir(shared) if not n.startswith("pytest-of-")] == []

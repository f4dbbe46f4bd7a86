"""A read-only or full run/ at start (issue 19): every daemon that creates things there stops with one line
naming the path and exit 73 (EX_CANTCREAT), never a traceback.  Real mounts, in a private mount namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from machina.exitcodes import ExitCode
from tests.conftest import CHECKOUT
from tests.disk_support import tmpfs_unavailable

# The daemons that make files in run/ at start, and what each fails on: first thing it makes there when
# read-only, the first file with content when full (empty files and sockets still find an inode).
MAKES = {
    "machina-toolhost": ("machina-etc.", "machina-etc."),
    "machina-embed": ("machina-etc.", None),  # its sandboxes' /etc copy is the first thing it makes in run/
    "machina up": ("machina-up.lock", "machina-up.pid"),
}
FAULTS = {
    "read-only": ("mount --bind {run} {run}; mount -o remount,bind,ro {run}", "Read-only file system"),
    "full": ("mount -t tmpfs -o size=128k tmpfs {run}; {fill}", "No space left on device"),
}


@pytest.fixture(autouse=True)
def private_mounts() -> None:
    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)


def start_under(fault: str, daemon: str, root: Path) -> subprocess.CompletedProcess[str]:
    run = root / "run"
    fill = f"{sys.executable} -c 'from tests.disk_support import fill; fill(\"{run}/filler\")'"
    prepare = FAULTS[fault][0].format(run=run, fill=fill)
    argv = [sys.executable, "-m", "machina.entrypoints", *daemon.split()]
    env = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root)}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", f'{prepare}\nexec "$@"', "sh", *argv],
        env={**env, "TMPDIR": os.environ.get("TMPDIR", "/tmp"), "MACHINA_API_PORT": "9"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CHECKOUT,
    )


CASES = [
    (daemon, fault, made)
    for daemon, (read_only, full) in sorted(MAKES.items())
    for fault, made in (("read-only", read_only), ("full", full))
    if made is not None  # machina-embed makes only a directory and a socket in run/, which a full tmpfs still takes
]


@pytest.mark.parametrize(("daemon", "fault", "made"), CASES)
def test_an_uncreatable_run_dir_is_one_line_and_exit_73(machina_root: Path, daemon: str, fault: str, made: str) -> None:
    result = start_under(fault, daemon, machina_root)
    assert result.returncode == ExitCode.CANTCREAT, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    prog = daemon.split()[0]
    assert last.startswith(f"{prog}: cannot create {machina_root / 'run'}/{made}"), last
    assert last.endswith(FAULTS[fault][1]), last

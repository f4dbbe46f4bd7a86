"""Shared fixtures, and collection of the shell-level bats tests (tests/**/*.bats) as pytest items.

Bats files run with bin/ first on PATH; $CHECKOUT is the checkout and $PYTHON the venv's python.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leftovers import Guard, describe

CHECKOUT = Path(__file__).resolve().parent.parent
BIN = CHECKOUT / "bin"
_SCRUB_PREFIXES = (
    "MACHINA_",
    "TELEGRAM_",
    "OAI_COMPAT_",
    "ANTHROPIC_",
    "OLLAMA_",
    "NOTIFY_SOCKET",
    "WATCHDOG_",
    "JOURNAL_STREAM",
    "LISTEN_",
    "RUNTIME_DIRECTORY",
    "PROMETHEUS_MULTIPROC_DIR",
)


# --- leave nothing behind (issue 19; the rules are in tests/leftovers.py) -----------------------------------

_GUARD_KEY = pytest.StashKey[Guard]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_GUARD_KEY] = Guard.begin()  # before anything asks for a temporary directory


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(_GUARD_KEY, None)
    if guard is not None:
        guard.end()


@pytest.fixture(scope="session", autouse=True)
def leave_nothing_behind(pytestconfig: pytest.Config) -> Iterator[None]:
    """Fails the run, naming them, if tests or the processes they started left entries in $TMPDIR,
    /tmp or /dev/shm."""
    yield
    from machina import owned
    from machina.sandbox import etcview

    # This process's own clean stop: sandboxes launched in-process made an /etc view, and tools, policy
    # drivers and gates run in-process made scratch parents.
    view = etcview.install(None)
    if view is not None:
        view.close()
    owned.close_scratch()
    left = pytestconfig.stash[_GUARD_KEY].leftovers()
    if left:
        pytest.fail(describe(left), pytrace=False)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's MACHINA_* settings or an installed /etc/machina/machina.env."""
    for key in list(os.environ):
        if key.startswith(_SCRUB_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MACHINA_ENV_FILE", "/dev/null")


@pytest.fixture
def machina_root(tmp_path: Path) -> Path:
    from machina.root import init_root

    root = tmp_path / "root"
    init_root(str(root))
    return root


def bin_env(**extra: str) -> dict[str, str]:
    """Environment for running bin/ tools as an operator's shell would: checkout bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["MACHINA_ENV_FILE"] = "/dev/null"
    env.update(extra)
    return env


def run_bin(
    *argv: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a bin/ executable through /bin/sh, the way a pipeline or cron line would."""
    import shlex

    command = " ".join(shlex.quote(a) for a in argv)
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env=env or bin_env(),
        input=input,
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=CHECKOUT,
    )


# --- bats collection ---------------------------------------------------------------------------------------

_BATS_TEST = re.compile(r'^\s*@test\s+"((?:[^"\\]|\\.)*)"', re.MULTILINE)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".bats":
        return BatsFile.from_parent(parent, path=file_path)
    return None


class BatsFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        for match in _BATS_TEST.finditer(self.path.read_text()):
            yield BatsItem.from_parent(self, name=match.group(1))


class BatsFailure(Exception):
    pass


class BatsItem(pytest.Item):
    def runtest(self) -> None:
        bats = shutil.which("bats")
        if bats is None:
            pytest.fail("bats is not installed (make setup installs Debian's bats package)")
        env = bin_env(CHECKOUT=str(CHECKOUT), PYTHON=sys.executable)
        proc = subprocess.run(
            [bats, "--tap", "--filter", "^" + re.escape(self.name) + "$", str(self.path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=CHECKOUT,
        )
        results = [line for line in proc.stdout.splitlines() if re.match(r"(not )?ok \d+", line)]
        if len(results) != 1:
            raise BatsFailure(f"expected one bats result, got {len(results)}\n{proc.stdout}\n{proc.stderr}")
        line = results[0]
        if line.startswith("not ok"):
            raise BatsFailure(proc.stdout + proc.stderr)
        skip = re.search(r"# skip\b\s*(.*)$", line)
        if skip:
            pytest.skip(skip.group(1) or "skipped by bats")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: object = None) -> str:
        if isinstance(excinfo.value, BatsFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"bats: {self.name}"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Both ends of a real socketpair (the channel tests and the broker's), closed afterwards."""
    left, right = socket.socketpair()
    yield left, right
    left.close()
    right.close()

"""The unprivileged tier: Machina run as a uid that is not root, as the units run it (issue 11).

Most of the suite runs as root, which hides per-uid kernel behaviour: RLIMIT_NPROC counting the tasks of a
uid, /proc/<pid> of a process that is not dumpable, SO_PEERCRED of a second uid.  Here root starts the
program under test as ``UID`` with ``setpriv --reuid/--regid --clear-groups`` (no capability is left), in
a scratch directory that uid owns, and a second uid, ``PEER``, stands in for an operator.  Neither uid
needs a passwd entry.

Where the interpreter, the virtualenv or the checkout lies below a directory other uids cannot traverse (a
pyenv or a checkout under /root), the program runs in a mount namespace of its own in which that directory
is an empty tmpfs holding only those (bubblewrap, as root, binds them read-only; nothing else changes).

The tier skips, saying why, when it is not run as root or setpriv is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import BIN, CHECKOUT

UID = 64055  # the uid the units run as, here: unused on this machine, no passwd entry needed
PEER = 64056  # a second, ordinary uid (not 65534, which PrivateUsers= maps every unknown uid to)
SETPRIV = shutil.which("setpriv")
PYTHON = sys.executable


def _blocking_ancestor(path: str) -> str | None:
    """The topmost directory above ``path`` that other uids cannot traverse, if any."""
    parts = os.path.realpath(path).strip("/").split("/")
    for i in range(1, len(parts)):
        directory = "/" + "/".join(parts[:i])
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def _view() -> list[str]:
    """bubblewrap arguments giving the uid a way to the interpreter, the venv and the checkout (empty when
    it has one): each directory it cannot traverse becomes a tmpfs holding only what is needed below it."""
    needed = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, str(CHECKOUT))})
    blocked = {path: _blocking_ancestor(path) for path in needed}
    if not any(blocked.values()):
        return []
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip(f"uid {UID} cannot reach {sorted(p for p, b in blocked.items() if b)} and bwrap is missing")
    args = [bwrap, "--dev-bind", "/", "/"]
    for blocking in sorted({b for b in blocked.values() if b}):
        args += ["--perms", "0755", "--tmpfs", blocking]
    made: set[str] = set()
    for path, blocking in blocked.items():
        if blocking is None or any(path.startswith(other + "/") for other in blocked if other != path):
            continue  # reachable already, or inside another bound path (a venv in the checkout)
        steps, parent = [], os.path.dirname(path)
        while parent != blocking:
            steps.insert(0, parent)
            parent = os.path.dirname(parent)
        for step in steps:  # traversable, unlike what bubblewrap would make by itself
            if step not in made:
                args += ["--perms", "0755", "--dir", step]
                made.add(step)
        args += ["--ro-bind", path, path]
    return [*args, "--"]


def as_uid(argv: Sequence[str], uid: int = UID) -> list[str]:
    """``argv`` run as ``uid`` (its own gid, no supplementary groups, no capabilities)."""
    assert SETPRIV is not None
    drop = [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]
    return [*_view(), *drop, *argv]


def run_as(
    argv: Sequence[str], env: dict[str, str], uid: int = UID, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(as_uid(argv, uid), env=env, capture_output=True, text=True, timeout=timeout, cwd="/")


@pytest.fixture(scope="session", autouse=True)
def unprivileged_tier() -> None:
    if os.geteuid() != 0:
        pytest.skip("the unprivileged tier switches uids: run it as root (make test does, in CI)")
    if SETPRIV is None:
        pytest.skip("setpriv (util-linux) is not installed")
    probe = run_as([PYTHON, "-c", "import machina, prctl, os; print(os.getuid())"], env={"PATH": "/usr/bin:/bin"})
    if probe.returncode != 0 or probe.stdout.strip() != str(UID):
        pytest.skip(f"cannot run the venv's python as uid {UID}: {probe.stderr.strip()[-300:]}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory ``UID`` owns (0700), removed afterwards: pytest's own tmp_path is root's and private."""
    path = Path(tempfile.mkdtemp(prefix="machina-unprivileged-"))
    os.chown(path, UID, UID)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def own(path: Path) -> None:
    """Give ``path`` and everything below it to ``UID``."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            os.lchown(name, UID, UID)


def base_env(**extra: str) -> dict[str, str]:
    env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "MACHINA_ENV_FILE": "/dev/null"}
    env.update(extra)
    return env


def _accepts(path: Path) -> bool:
    """True once a listener accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def started_as(argv: Sequence[str], env: dict[str, str], ready: Path, log: Path) -> Iterator[subprocess.Popen]:
    """A daemon started as ``UID``, once it accepts on the socket ``ready``; SIGTERM (then SIGKILL) after."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(as_uid(argv), env=env, stdout=out, stderr=out, cwd="/", start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _accepts(ready):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{argv[0]} did not start: {log.read_text()}"
            time.sleep(0.05)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def daemon_pid(proc: subprocess.Popen) -> int:
    """The pid of the program itself: below bubblewrap and setpriv (which exec) when there is a view."""
    if not _view():
        return proc.pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/children") as handle:
                children = [int(p) for p in handle.read().split()]
            if children:
                return children[0]
        time.sleep(0.05)
    raise AssertionError("bubblewrap started nothing")


__all__ = ["CHECKOUT", "PEER", "PYTHON", "UID", "as_uid", "base_env", "daemon_pid", "own", "run_as", "started_as"]

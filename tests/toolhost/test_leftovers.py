"""machina-toolhost leaves nothing behind (issue 19): its sandboxes' /etc copy and tool scratch live in places
that name it, go at every clean stop, and are swept at the next start after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from machina.exitcodes import ExitCode
from machina.testing.toolhost import running_toolhost, toolhost_command
from tests.disk_support import tmpfs_unavailable

from .conftest import needs_bwrap


def etc_views(run_dir: Path) -> list[str]:
    return sorted(name for name in os.listdir(run_dir) if name.startswith("machina-etc."))


def tool_scratch() -> list[str]:
    return sorted(name for name in os.listdir(tempfile.gettempdir()) if name.startswith("machina-tool."))


@needs_bwrap
def test_the_etc_view_is_in_run_while_running_and_gone_after_sigterm(machina_root: Path) -> None:
    run_dir = machina_root / "run"
    with running_toolhost(str(machina_root), env={"MACHINA_PERMISSION_MODE": "open"}) as host:
        reply = host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["cat", "/etc/hosts"]})
        assert reply.ok, reply
        assert etc_views(run_dir) == [f"machina-etc.{host.pid}"]
        host.client.close()
        host.proc.send_signal(signal.SIGTERM)
        assert host.proc.wait(30) == 0
    assert etc_views(run_dir) == []
    assert sorted(os.listdir(run_dir)) == []  # the socket too


@needs_bwrap
def test_sigint_stops_cleanly_too(machina_root: Path) -> None:
    with running_toolhost(str(machina_root)) as host:
        host.client.close()
        host.proc.send_signal(signal.SIGINT)
        assert host.proc.wait(30) == 0
    assert os.listdir(machina_root / "run") == []


@needs_bwrap
def test_a_sigkilled_toolhosts_view_is_swept_by_the_next_start(machina_root: Path) -> None:
    run_dir = machina_root / "run"
    with running_toolhost(str(machina_root)) as first:
        first.proc.kill()
        first.proc.wait(30)
        killed = f"machina-etc.{first.pid}"
        assert etc_views(run_dir) == [killed]  # SIGKILL: nothing could remove it
        assert killed not in os.listdir(tempfile.gettempdir())  # its one view was in run/, none in $TMPDIR
    with running_toolhost(str(machina_root)) as second:
        assert etc_views(run_dir) == [f"machina-etc.{second.pid}"]
        assert f"removed {run_dir / killed}, left by a process that no longer runs" in second.log()


def test_without_bubblewrap_the_tool_scratch_goes_at_stop(machina_root: Path) -> None:
    env = {"MACHINA_PERMISSION_MODE": "open"}
    with running_toolhost(str(machina_root), env=env, args=("--bwrap", "/nonexistent/bwrap")) as host:
        assert host.client.call("AID.SHELL.EXEC.v1", {"cmd": ["echo", "hello"]}).ok
        mine = f"machina-tool.{host.pid}"
        assert mine in tool_scratch()  # (this test process's own in-process sandboxes have one too)
        host.client.close()
        host.proc.terminate()
        assert host.proc.wait(30) == 0
    assert mine not in tool_scratch()


@needs_bwrap
def test_a_view_whose_owner_runs_is_left_alone(machina_root: Path) -> None:
    """Two toolhosts on one runtime dir (different sockets): neither sweeps the other's view."""
    run_dir = machina_root / "run"
    with running_toolhost(str(machina_root)) as first:
        other = str(machina_root / "run" / "second.sock")
        with running_toolhost(str(machina_root), socket_path=other) as second:
            assert etc_views(run_dir) == sorted([f"machina-etc.{first.pid}", f"machina-etc.{second.pid}"])
            assert first.client.ping()


def run_in_private_mount(script: str, root: Path) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) prepares mounts in a private mount namespace, then the toolhost runs there."""
    command = " ".join(toolhost_command(str(root)))
    env = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_ROOT": str(root)}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", f"{script}\nexec {command}"],
        env={**env, "TMPDIR": os.environ.get("TMPDIR", "/tmp")},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def private_mounts() -> None:
    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)


@needs_bwrap
def test_a_read_only_run_dir_is_one_line_and_exit_73(machina_root: Path, private_mounts: None) -> None:
    run_dir = machina_root / "run"
    result = run_in_private_mount(f"mount --bind {run_dir} {run_dir}; mount -o remount,bind,ro {run_dir}", machina_root)
    assert result.returncode == ExitCode.CANTCREAT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith(f"machina-toolhost: cannot create {run_dir}/machina-etc.")
    assert lines[-1].endswith("Read-only file system")


@needs_bwrap
def test_a_full_run_dir_is_one_line_and_exit_73(machina_root: Path, private_mounts: None) -> None:
    run_dir = machina_root / "run"
    fill = f"{sys.executable} -c 'from tests.disk_support import fill; fill(\"{run_dir}/filler\")'"
    result = run_in_private_mount(f"mount -t tmpfs -o size=256k tmpfs {run_dir}\ncd {Path.cwd()}\n{fill}", machina_root)
    assert result.returncode == ExitCode.CANTCREAT, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"machina-toolhost: cannot create {run_dir}/machina-etc.")
    assert last.endswith("No space left on device")


def test_a_read_only_tmp_without_bubblewrap_is_one_line_and_exit_73(
    machina_root: Path, tmp_path: Path, private_mounts: None
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    command = " ".join([*toolhost_command(str(machina_root)), "--bwrap", "/nonexistent/bwrap"])
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount --bind {tmp} {tmp}; mount -o remount,bind,ro {tmp}; exec {command}"],
        env={"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "TMPDIR": str(tmp)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == ExitCode.CANTCREAT, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"machina-toolhost: cannot create {tmp}/machina-tool.{_pid_in(result.stderr)}: Read-only file system"
    )


def _pid_in(stderr: str) -> str:
    return stderr.rsplit("machina-tool.", 1)[1].split(":", 1)[0]


def test_an_error_exit_at_start_leaves_nothing(machina_root: Path) -> None:
    """The /etc view is made before the sandbox check; the check failing still removes it (exit 69)."""
    env = {"PATH": os.environ["PATH"], "MACHINA_ENV_FILE": "/dev/null", "MACHINA_BWRAP_REQUIRED": "1"}
    result = subprocess.run(
        [*toolhost_command(str(machina_root)), "--bwrap", "/nonexistent/bwrap"],
        env={**env, "TMPDIR": tempfile.gettempdir()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    assert os.listdir(machina_root / "run") == []

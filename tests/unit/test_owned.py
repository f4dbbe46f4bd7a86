"""machina.owned: per-process directories, and the sweep of what a killed owner left (issue 19)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from machina.exitcodes import ExitCode, MachinaError
from machina.owned import LOCK_NAME, OwnedDir, creating, sweep, sweep_temps, temp_name
from machina.sandbox.etcview import EtcView
from machina.sandbox.policy import SandboxUnavailable


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_an_owned_dir_carries_the_pid_and_is_gone_after_close(tmp_path: Path) -> None:
    owned = OwnedDir(str(tmp_path), "machina-thing")
    path = owned.create()
    assert path == str(tmp_path / f"machina-thing.{os.getpid()}")
    assert (os.stat(path).st_mode & 0o777) == 0o700
    owned.close()
    assert os.listdir(tmp_path) == []


def test_a_dead_owners_dir_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    dead = tmp_path / f"machina-thing.{dead_pid()}"
    (dead / "inside").mkdir(parents=True)
    (dead / "inside" / "file").write_text("x")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from machina.owned import OwnedDir; "
         "OwnedDir(sys.argv[1], 'machina-thing').create(); print('ok', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ok\n"
        live = tmp_path / f"machina-thing.{holder.pid}"
        assert not dead.exists()  # the holder's start swept it
        (tmp_path / "machina-other.1").mkdir()
        report = sweep(str(tmp_path), "machina-thing")
        assert report.live == [str(live)] and report.removed == [] and live.is_dir()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    # Killed owners leave their dir; the lock is free and the pid is gone, so the next sweep removes it.
    assert live.is_dir()
    assert sweep(str(tmp_path), "machina-thing").removed == [str(live)]
    assert sorted(os.listdir(tmp_path)) == ["machina-other.1"]


def test_a_locked_dir_is_never_swept_even_when_its_pid_looks_dead(tmp_path: Path) -> None:
    import fcntl

    locked = tmp_path / f"machina-thing.{dead_pid()}"
    locked.mkdir()
    fd = os.open(locked / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an owner in another pid namespace holds it
        assert sweep(str(tmp_path), "machina-thing").live == [str(locked)]
    finally:
        os.close(fd)


def test_a_symlink_or_foreign_entry_is_left_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep").write_text("keep")
    planted = tmp_path / "run" / f"machina-thing.{dead_pid()}"
    planted.parent.mkdir()
    planted.symlink_to(target)
    report = sweep(str(planted.parent), "machina-thing")
    assert report.foreign == [str(planted)] and report.removed == []
    assert (target / "keep").read_text() == "keep" and planted.is_symlink()
    assert f"left alone {planted}" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory owned by another uid")
def test_a_dir_of_another_uid_is_left_alone(tmp_path: Path) -> None:
    other = tmp_path / f"machina-thing.{dead_pid()}"
    other.mkdir()
    os.chown(other, 65534, 65534)
    assert sweep(str(tmp_path), "machina-thing").foreign == [str(other)]
    assert other.is_dir()


def test_create_in_an_uncreatable_place_is_one_line_and_exit_73(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MachinaError) as caught:
        OwnedDir(str(blocker / "run"), "machina-thing").create()
    assert str(blocker / "run") in str(caught.value) and "\n" not in str(caught.value)


def test_creating_turns_a_read_only_error_into_exit_73() -> None:
    with pytest.raises(MachinaError) as caught, creating():
        raise OSError(errno.EROFS, "Read-only file system", "/srv/machina/run/x")
    assert caught.value.exit_code == ExitCode.CANTCREAT
    assert str(caught.value) == "cannot create /srv/machina/run/x: Read-only file system"
    with pytest.raises(MachinaError) as refused, creating():
        raise OSError(errno.EACCES, "Permission denied", "/srv/machina/run")
    assert (refused.value.exit_code, str(refused.value)) == (ExitCode.NOPERM, "/srv/machina/run: Permission denied")
    with pytest.raises(OSError), creating():
        raise OSError(errno.EBADF, "Bad file descriptor")  # names no path: not the operator's problem


def test_temporary_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    mine = Path(temp_name(str(tmp_path / "state.json")))
    mine.write_text("in flight")
    short = Path(temp_name(str(tmp_path / "x.sock"), short=True))
    short.write_text("")
    theirs = tmp_path / f".state.json.{dead_pid()}-abcdef012345.tmp"
    theirs.write_text("torn")
    other = tmp_path / ".not-ours.tmp"
    other.write_text("")
    assert sweep_temps(str(tmp_path)) == [str(theirs)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, short.name, other.name])


def test_the_etc_view_lives_under_its_parent_and_close_removes_every_generation(tmp_path: Path) -> None:
    source = tmp_path / "etc"
    source.mkdir()
    (source / "hosts").write_text("127.0.0.1 localhost\n")
    os.chmod(source / "hosts", 0o644)
    view = EtcView(str(tmp_path / "run"), source=str(source), entries=("hosts",), check_every=0)
    first = view.path()
    assert first.startswith(str(tmp_path / "run" / f"machina-etc.{os.getpid()}") + "/")
    assert (Path(first) / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert (os.stat(first).st_mode & 0o777) == 0o755  # the tool uid reads it inside the sandbox
    (source / "hosts").write_text("127.0.0.1 localhost changed\n")
    second = view.path()
    assert second != first
    view.close()
    assert os.listdir(tmp_path / "run") == []


def test_a_closed_etc_view_refuses_a_new_copy_instead_of_making_its_directory_again(tmp_path: Path) -> None:
    # A pool's spawner thread may prepare a sandbox after the toolhost closed its view: nothing may be left.
    source = tmp_path / "etc"
    source.mkdir()
    (source / "hosts").write_text("127.0.0.1 localhost\n")
    view = EtcView(str(tmp_path / "run"), source=str(source), entries=("hosts",), check_every=0)
    view.open()
    view.close()
    with pytest.raises(SandboxUnavailable, match="closed"):
        view.path()
    assert os.listdir(tmp_path / "run") == []


FULL_DISK_VIEW = """
import os, subprocess, sys
from machina.sandbox.etcview import EtcView
from tests.disk_support import fill
parent, source = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", parent], check=True)
view = EtcView(parent, source=source, entries=("hosts",), check_every=0)
first = view.path()
fill(os.path.join(parent, "filler"))
with open(os.path.join(source, "hosts"), "w") as handle:
    handle.write("127.0.0.1 changed " + "x" * 8192 + "\\n")
print(view.path() == first, open(os.path.join(first, "hosts")).read().strip())
view.close()
print(sorted(os.listdir(parent)))
"""


def test_a_full_disk_keeps_the_last_good_etc_view(tmp_path: Path) -> None:
    from tests.disk_support import tmpfs_unavailable

    why_not = tmpfs_unavailable()
    if why_not:
        pytest.skip(why_not)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    os.chmod(tmp_path / "etc" / "hosts", 0o644)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", FULL_DISK_VIEW,
         str(tmp_path / "mnt"), str(tmp_path / "etc")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True 127.0.0.1 localhost", "['filler']"]
    assert "sandboxes keep the previous /etc copy: cannot create" in result.stderr

"""The durable-write helper: atomic replacement, private modes, and nothing torn on a crash or a full disk."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from machina import fsutil

from ..conftest import CHECKOUT


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 300_000])
def test_read_file_reads_the_whole_file(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    assert fsutil.read_file(str(tmp_path / "f")) == data
    assert fsutil.read_file(str(tmp_path / "f"), chunk=7) == data


def test_read_file_of_a_missing_file_or_a_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.read_file(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        fsutil.read_file(str(tmp_path))


def test_write_atomic_creates_and_replaces_with_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    fsutil.write_atomic(str(target), b"one", fsync=True)
    assert target.read_bytes() == b"one"
    assert target.stat().st_mode & 0o777 == 0o600
    fsutil.write_atomic(str(target), b"two", fsync=False)
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind


def test_write_atomic_into_separate_tmp_dir(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    fsutil.write_atomic(str(tmp_path / "a"), b"x", fsync=True, tmp_dir=str(tmp_path / "tmp"))
    assert (tmp_path / "a").read_bytes() == b"x" and os.listdir(tmp_path / "tmp") == []


def test_rename_moves_atomically(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "job").write_text("j")
    fsutil.rename(str(tmp_path / "a" / "job"), str(tmp_path / "b" / "job"), fsync=True)
    assert not (tmp_path / "a" / "job").exists() and (tmp_path / "b" / "job").read_text() == "j"


def test_ensure_dir_applies_mode_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert fsutil.ensure_dir(str(tmp_path / "x" / "y"), 0o700)
        assert not fsutil.ensure_dir(str(tmp_path / "x" / "y"), 0o700)
    finally:
        os.umask(old)
    assert (tmp_path / "x" / "y").stat().st_mode & 0o777 == 0o700


def test_full_disk_leaves_old_content_and_no_temporary(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        target = mnt / "state"
        fsutil.write_atomic(str(target), b"old", fsync=True)
        with pytest.raises(OSError) as excinfo:
            fsutil.write_atomic(str(target), b"x" * (1024 * 1024), fsync=True)
        assert excinfo.value.errno == errno.ENOSPC
        assert target.read_bytes() == b"old"
        assert os.listdir(mnt) == ["state"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "state").write_bytes(b"old")
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError) as excinfo:
            fsutil.write_atomic(str(ro / "state"), b"new", fsync=True)
        assert excinfo.value.errno == errno.EROFS
        assert (ro / "state").read_bytes() == b"old"
    finally:
        subprocess.run(["umount", str(ro)], check=True)


WRITER = textwrap.dedent("""
    import sys
    from machina import fsutil
    path, n = sys.argv[1], 0
    print("started", flush=True)
    while True:
        n += 1
        fsutil.write_atomic(path, (str(n) * 50000).encode(), fsync=n % 2 == 0)
""")


def test_kill_9_mid_write_never_leaves_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.write_bytes(b"0" * 50000)
    for delay in (0.05, 0.11, 0.17, 0.23):
        with subprocess.Popen(  # the context manager closes our end of the pipe
            [sys.executable, "-c", WRITER, str(target)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(CHECKOUT)},
        ) as proc:
            assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        data = target.read_bytes()
        assert len(data) % 50000 == 0, "torn content"
        n = int(data[: len(data) // 50000])
        assert data == (str(n) * 50000).encode(), "torn content"

"""Paths under the root: component-by-component walking, no symlinks, no '..', the suite's directories kept out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from machina.toolhost.confine import ConfinedRoot, PathRefused


@pytest.fixture
def confined(machina_root: Path):
    (machina_root / "data").mkdir()
    (machina_root / "data" / "a.txt").write_text("alpha")
    root = ConfinedRoot(str(machina_root))
    yield root
    root.close()


def read(root: ConfinedRoot, path: str) -> bytes:
    fd, _ = root.open_read(path)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def write(root: ConfinedRoot, path: str, data: bytes, *, overwrite: bool = False, mkdirs: bool = False) -> dict:
    pending, fd = root.create_pending(path, overwrite=overwrite, mkdirs=mkdirs)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return root.commit(pending, fsync=False)


def test_reads_relative_and_absolute_paths_inside(confined: ConfinedRoot, machina_root: Path) -> None:
    assert read(confined, "data/a.txt") == b"alpha"
    assert read(confined, "./data//a.txt") == b"alpha"
    assert read(confined, str(machina_root / "data" / "a.txt")) == b"alpha"


@pytest.mark.parametrize(
    "path, reason",
    [
        ("", "not a usable path"),
        ("data/\x00", "not a usable path"),
        ("x" * 5000, "not a usable path"),
        (".", "names the working root"),
        ("../etc/passwd", "'..' is not allowed"),
        ("data/../data/a.txt", "'..' is not allowed"),
        ("/etc/passwd", "outside the working root"),
        ("data/missing.txt", "no such file"),
        ("nodir/a.txt", "directory nodir does not exist"),
        ("data/a.txt/x", "data/a.txt is not a directory"),
        ("data", "not a regular file"),
        ("queue/inbox/x.json", "belongs to the suite"),
        ("state/anything", "belongs to the suite"),
        ("run/toolhost.sock", "belongs to the suite"),
    ],
)
def test_read_refusals(confined: ConfinedRoot, path: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason):
        confined.open_read(path)


def test_symlinks_are_never_followed_at_any_step(confined: ConfinedRoot, machina_root: Path) -> None:
    data = machina_root / "data"
    (data / "to-file").symlink_to("a.txt")
    (data / "to-dir").symlink_to(".")
    (data / "out").symlink_to("/etc")
    (machina_root / "alias").symlink_to("data")
    for path in ("data/to-file", "data/to-dir/a.txt", "data/out/passwd", "alias/a.txt"):
        with pytest.raises(PathRefused, match="symbolic link"):
            confined.open_read(path)


def test_a_fifo_is_refused_without_blocking(confined: ConfinedRoot, machina_root: Path) -> None:
    os.mkfifo(machina_root / "data" / "pipe")
    with pytest.raises(PathRefused, match="not a regular file"):
        confined.open_read("data/pipe")


def test_memory_and_logs_are_readable_but_not_writable(confined: ConfinedRoot, machina_root: Path) -> None:
    (machina_root / "logs" / "run_1.jsonl").write_text("{}\n")
    assert read(confined, "logs/run_1.jsonl") == b"{}\n"
    for path in ("logs/run_2.jsonl", "memory/x.jsonl", "plugins/evil.py", "toolpacks/p/manifest.json", "goalpacks/g"):
        with pytest.raises(PathRefused, match="belongs to the suite"):
            confined.create_pending(path, overwrite=True, mkdirs=True)


def test_atomic_write_keeps_a_backup_and_never_clobbers_without_overwrite(
    confined: ConfinedRoot, machina_root: Path
) -> None:
    assert write(confined, "data/new.txt", b"one") == {"created": True, "backup": None}
    with pytest.raises(PathRefused, match="already exists"):
        write(confined, "data/new.txt", b"two")
    assert write(confined, "data/new.txt", b"two", overwrite=True) == {"created": False, "backup": "data/new.txt.bak"}
    assert (machina_root / "data" / "new.txt").read_bytes() == b"two"
    assert (machina_root / "data" / "new.txt.bak").read_bytes() == b"one"
    assert sorted(p.name for p in (machina_root / "data").iterdir()) == ["a.txt", "new.txt", "new.txt.bak"]


def test_a_name_that_appears_meanwhile_is_not_replaced(confined: ConfinedRoot, machina_root: Path) -> None:
    pending, fd = confined.create_pending("data/race.txt", overwrite=False, mkdirs=False)
    os.close(fd)
    (machina_root / "data" / "race.txt").write_text("someone else")
    with pytest.raises(PathRefused, match="already exists"):
        confined.commit(pending, fsync=False)
    assert (machina_root / "data" / "race.txt").read_text() == "someone else"
    assert [p.name for p in (machina_root / "data").iterdir() if p.name.endswith(".tmp")] == []


def test_an_uncommitted_write_leaves_nothing(confined: ConfinedRoot, machina_root: Path) -> None:
    pending, fd = confined.create_pending("data/half.txt", overwrite=False, mkdirs=False)
    os.write(fd, b"half")
    os.close(fd)
    confined.discard(pending)
    assert sorted(p.name for p in (machina_root / "data").iterdir()) == ["a.txt"]


def test_mkdirs_creates_private_directories_but_not_through_links(confined: ConfinedRoot, machina_root: Path) -> None:
    write(confined, "reports/2026/summary.md", b"# hi", mkdirs=True)
    assert (machina_root / "reports" / "2026").stat().st_mode & 0o777 == 0o700
    (machina_root / "data" / "out").symlink_to("/tmp")
    with pytest.raises(PathRefused, match="symbolic link"):
        confined.create_pending("data/out/new/evil", overwrite=False, mkdirs=True)
    with pytest.raises(PathRefused, match="does not exist"):
        confined.create_pending("nowhere/x", overwrite=False, mkdirs=False)


def test_a_symlink_target_is_not_replaced(confined: ConfinedRoot, machina_root: Path) -> None:
    (machina_root / "data" / "link").symlink_to("/etc/hostname")
    with pytest.raises(PathRefused, match="symbolic link"):
        confined.create_pending("data/link", overwrite=True, mkdirs=False)


def test_memory_streams(confined: ConfinedRoot, machina_root: Path) -> None:
    assert confined.open_stream("notes", append=False) is None
    fd = confined.open_stream("notes", append=True)
    assert fd is not None
    os.write(fd, b'{"a":1}\n')
    os.close(fd)
    assert (machina_root / "memory" / "notes.jsonl").stat().st_mode & 0o777 == 0o600
    for bad in ("../x", "Notes", "a/b", "", "x" * 65):
        with pytest.raises(PathRefused, match="not a memory stream name"):
            confined.open_stream(bad, append=True)
    (machina_root / "memory" / "linked.jsonl").symlink_to("/etc/passwd")
    with pytest.raises(PathRefused, match="symbolic link"):
        confined.open_stream("linked", append=False)

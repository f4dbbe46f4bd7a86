"""Paths under the root: component-by-component walking, no symlinks, no '..', only data/, reports/, work/."""

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


def test_a_second_close_leaves_a_reused_descriptor_alone(machina_root: Path) -> None:
    root = ConfinedRoot(str(machina_root))
    number = root.fd
    root.close()
    opened = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if opened != number:  # another owner takes that number
        os.dup2(opened, number, inheritable=False)
        os.close(opened)
    reused = number
    try:
        root.close()
        os.fstat(reused)  # still open
    finally:
        os.close(reused)


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
        ("data/nodir/a.txt", "directory data/nodir does not exist"),
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
    (machina_root / "work").symlink_to("logs")  # an allowed name that is a link to a suite directory
    for path in ("data/to-file", "data/to-dir/a.txt", "data/out/passwd", "work/a.txt"):
        with pytest.raises(PathRefused, match="symbolic link"):
            confined.open_read(path)


def test_a_fifo_is_refused_without_blocking(confined: ConfinedRoot, machina_root: Path) -> None:
    os.mkfifo(machina_root / "data" / "pipe")
    with pytest.raises(PathRefused, match="not a regular file"):
        confined.open_read("data/pipe")


OUT_OF_REACH = [
    ("policies/driver.py", "policies/ is not"),
    ("logs/run_1.jsonl", "logs/ belongs to the suite"),
    ("logs/machina-up.log", "logs/ belongs to the suite"),
    ("memory/notes.jsonl", "memory/ belongs to the suite"),
    ("plugins/evil.py", "plugins/ belongs to the suite"),
    ("toolpacks/p/manifest.json", "toolpacks/ belongs to the suite"),
    ("goalpacks/g/manifest.json", "goalpacks/ belongs to the suite"),
    ("etc/machina.env", "etc/ is not"),
    ("app.log", "app.log/ is not"),
    (".env", ".env/ is not"),
    ("data/.env", "data/.env: .env is a hidden name"),
    ("reports/.git/config", "reports/.git/config: .git is a hidden name"),
]


def plant(machina_root: Path) -> None:
    """A file at every place of OUT_OF_REACH, so a refusal cannot be a missing file."""
    for path, _ in OUT_OF_REACH:
        target = machina_root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("secret\n")


@pytest.mark.parametrize("path, reason", OUT_OF_REACH)
def test_d1_writes_reach_only_data_reports_and_work(
    confined: ConfinedRoot, machina_root: Path, path: str, reason: str
) -> None:
    plant(machina_root)
    with pytest.raises(PathRefused, match=reason) as refused:
        confined.create_pending(path, overwrite=True, mkdirs=True)
    if "hidden" not in reason:
        assert "tools may write only under data/, reports/, work/" in str(refused.value)
    assert (machina_root / path).read_text() == "secret\n"


def test_d1_the_writable_directories_take_writes(confined: ConfinedRoot, machina_root: Path) -> None:
    for path in ("data/new.txt", "reports/r/summary.md", "work/scratch/x"):
        assert write(confined, path, b"ok", mkdirs=True)["created"] is True
        assert (machina_root / path).read_bytes() == b"ok"
    with pytest.raises(PathRefused, match="names the directory work/ itself"):
        confined.create_pending("work", overwrite=True, mkdirs=True)


@pytest.mark.parametrize("path, reason", OUT_OF_REACH)
def test_d3_reads_reach_only_data_reports_and_work(
    confined: ConfinedRoot, machina_root: Path, path: str, reason: str
) -> None:
    plant(machina_root)
    with pytest.raises(PathRefused, match=reason.replace("write", "read")) as refused:
        confined.open_read(path)
    if "hidden" not in reason:
        assert "tools may read only under data/, reports/, work/" in str(refused.value)


def test_d3_the_readable_directories_are_read(confined: ConfinedRoot, machina_root: Path) -> None:
    for path in ("data/a.txt", "reports/r.md", "work/w.txt"):
        (machina_root / path).parent.mkdir(exist_ok=True)
        (machina_root / path).write_text("alpha")
        assert read(confined, path) == b"alpha"


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
        confined.create_pending("data/nowhere/x", overwrite=False, mkdirs=False)


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

"""Paths under MACHINA_ROOT, opened the only safe way: component by component, never through a symlink.

Every tool path is relative to the root (an absolute path is accepted only when it is textually under the
root).  ``..`` is refused outright rather than resolved, and each directory is opened with
``O_NOFOLLOW | O_DIRECTORY`` relative to the previous one, so neither a symlink nor a rename race can walk
out of the root: the walk holds a descriptor of every step.

The file tools reach an allow-list of top-level directories only (:data:`machina.root.TOOL_DIRS`: data/,
reports/, work/), for reading and for writing alike, and no hidden name (a component starting with ``.``)
anywhere in the path.  Everything else under the root -- the queue, other runs' logs, memory (which has its
own tools and grants), packs, plugins, state, the runtime directory, anything an operator keeps there --
is refused, so a job can neither read other jobs' data nor rewrite what the suite executes or reads as
configuration.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from typing import Any

from machina.audit.runlog import RUN_ID_PATTERN
from machina.memory.streams import StreamError, check_name, is_typed
from machina.root import LAYOUT, TOOL_DIRS
from machina.tools.base import ToolFailure

SUITE_DIRS = frozenset(rel.split("/")[0] for rel in LAYOUT)
_ABLE = {"read": "readable", "write": "writable"}
MAX_PATH = 4096
TRASH = ("state", "trash")  # where FILE.DELETE keeps what it removed: the suite's, out of every tool's reach
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathRefused(ToolFailure):
    pass


@dataclass
class PendingWrite:
    """A temporary file created beside its target, waiting to be renamed over it."""

    dir_fd: int
    tmp_name: str
    name: str
    path: str
    overwrite: bool


class ConfinedRoot:
    """MACHINA_ROOT, held open; every lookup starts from this descriptor."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        """Idempotent: a second close must not close whatever descriptor has reused the number since."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- paths --------------------------------------------------------------------------------------------

    def parts(self, path: str) -> list[str]:
        """The components of a tool path, relative to the root; refuses anything that could leave it."""
        if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\x00" in path:
            raise PathRefused(f"{path!r} is not a usable path")
        rel = path
        if os.path.isabs(path):
            prefix = self.path.rstrip("/") + "/"
            if not path.startswith(prefix):
                raise PathRefused(f"{path}: outside the working root")
            rel = path[len(prefix) :]
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise PathRefused(f"{path}: '..' is not allowed in a tool path")
        if not parts:
            raise PathRefused(f"{path}: names the working root itself, not a file")
        return parts

    def tool_parts(self, path: str, verb: str) -> list[str]:
        """:meth:`parts` of a path the file tools may ``verb`` (read, write): under TOOL_DIRS, no hidden name."""
        parts = self.parts(path)
        allowed = "/, ".join(TOOL_DIRS) + "/"
        if parts[0] not in TOOL_DIRS:
            whose = "belongs to the suite" if parts[0] in SUITE_DIRS else f"is not {_ABLE[verb]} by tools"
            raise PathRefused(f"{path}: {parts[0]}/ {whose}; tools may {verb} only under {allowed}")
        if len(parts) == 1 and verb == "write":
            raise PathRefused(f"{path}: names the directory {parts[0]}/ itself, not a file under it")
        hidden = next((p for p in parts if p.startswith(".")), None)
        if hidden is not None:
            raise PathRefused(f"{path}: {hidden} is a hidden name; tools may not {verb} dot-files")
        return parts

    def _walk(self, path: str, dirs: list[str], create: bool) -> int:
        """A descriptor of the directory ``dirs`` (relative to the root), each step without following links."""
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.fd)
        try:
            for i, name in enumerate(dirs):
                fd = self._step(fd, name, path, "/".join(dirs[: i + 1]), create)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _step(self, fd: int, name: str, path: str, where: str, create: bool) -> int:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise PathRefused(f"{path}: directory {where} does not exist") from None
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
            child = self._open_existing_dir(fd, name, path, where)
        except OSError as exc:
            raise self._explain(fd, name, path, where, exc) from None
        os.close(fd)
        return child

    def _open_existing_dir(self, fd: int, name: str, path: str, where: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise self._explain(fd, name, path, where, exc) from None

    @staticmethod
    def _explain(fd: int, name: str, path: str, where: str, exc: OSError) -> PathRefused:
        try:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode) or exc.errno == errno.ELOOP:
            return PathRefused(f"{path}: {where} is a symbolic link; links are not followed")
        if exc.errno == errno.ENOTDIR:
            return PathRefused(f"{path}: {where} is not a directory")
        return PathRefused(f"{path}: {where}: {exc.strerror}")

    # --- file tools -------------------------------------------------------------------------------------

    def open_read(self, path: str) -> tuple[int, int]:
        """A read-only descriptor of a regular file and its size."""
        parts = self.tool_parts(path, "read")
        dir_fd = self._walk(path, parts[:-1], create=False)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
            try:
                fd = os.open(parts[-1], flags, dir_fd=dir_fd)
            except FileNotFoundError:
                raise PathRefused(f"{path}: no such file") from None
            except OSError as exc:
                raise self._explain(dir_fd, parts[-1], path, "/".join(parts), exc) from None
        finally:
            os.close(dir_fd)
        return _regular_file(fd, path)

    def create_pending(self, path: str, *, overwrite: bool, mkdirs: bool) -> tuple[PendingWrite, int]:
        """A new temporary file beside ``path`` (and a write descriptor of it) to be committed later."""
        parts = self.tool_parts(path, "write")
        name = parts[-1]
        dir_fd = self._walk(path, parts[:-1], create=mkdirs)
        try:
            self._check_target(dir_fd, name, path, overwrite)
            tmp_name = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
            fd = os.open(
                tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
            )
        except BaseException:
            os.close(dir_fd)
            raise
        return PendingWrite(dir_fd, tmp_name, name, path, overwrite), fd

    @staticmethod
    def _check_target(dir_fd: int, name: str, path: str, overwrite: bool) -> None:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode):
            raise PathRefused(f"{path} is a symbolic link; it is not replaced")
        if not stat.S_ISREG(mode):
            raise PathRefused(f"{path} exists and is not a regular file")
        if not overwrite:
            raise PathRefused(f"{path} already exists (set overwrite to replace it; the old file is kept as .bak)")

    def commit(self, pending: PendingWrite, *, fsync: bool = True) -> dict[str, object]:
        """Rename the temporary file into place; the replaced content stays as ``<name>.bak``.

        Without overwrite the final step is link(2), which fails if the name appeared meanwhile.  With
        overwrite the old file is first hard-linked to a temporary name and renamed onto ``.bak``, so the
        target name never disappears, even for an instant.
        """
        fd, tmp, name = pending.dir_fd, pending.tmp_name, pending.name
        backup = None
        try:
            if pending.overwrite:
                self._check_target(fd, name, pending.path, overwrite=True)
                backup = self._keep_backup(fd, name, pending.path)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                try:
                    os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    raise PathRefused(f"{pending.path} already exists (set overwrite to replace it)") from None
                os.unlink(tmp, dir_fd=fd)
            if fsync:
                os.fsync(fd)
        finally:
            self.discard(pending)
        return {"created": backup is None, "backup": backup}

    @staticmethod
    def _keep_backup(dir_fd: int, name: str, path: str) -> str | None:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        link_tmp = f".{name[:200]}.{secrets.token_hex(6)}.bak.tmp"
        os.link(name, link_tmp, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        os.rename(link_tmp, name + ".bak", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return path + ".bak"

    @staticmethod
    def discard(pending: PendingWrite) -> None:
        """Remove the temporary file (if still there) and release the directory."""
        if pending.dir_fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pending.tmp_name, dir_fd=pending.dir_fd)
        os.close(pending.dir_fd)
        pending.dir_fd = -1

    # --- listing, appending, deleting (FILE.LIST/SEARCH, FILE.APPEND, FILE.DELETE), a run's own log -------

    def listable(self, name: str) -> bool:
        """Whether a top-level entry of the root is shown to FILE.LIST (what tools may read)."""
        return name in TOOL_DIRS

    def list_dir(self, path: str, *, depth: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Entries below a directory (``.``: the root), as data: ``{"path", "type", "size", "mtime"}``.

        Never a descriptor: a directory descriptor in a sandbox would reach everything below it.  Links are
        listed as links and not followed; the suite's unreadable directories are left out.  Returns the
        entries (sorted, at most ``limit``) and whether more were left out.
        """
        parts = [] if path.strip("/") in ("", ".") else self.tool_parts(path, "read")
        fd = self._walk(path, parts, create=False)
        entries: list[dict[str, Any]] = []
        try:
            complete = self._list_into(fd, "/".join(parts), depth, limit, entries, top=not parts)
        finally:
            os.close(fd)
        return entries, not complete

    def _list_into(self, fd: int, prefix: str, depth: int, limit: int, out: list[dict[str, Any]], top: bool) -> bool:
        for entry in sorted(os.scandir(fd), key=lambda e: e.name):
            if (top and not self.listable(entry.name)) or entry.name.startswith("."):
                continue
            if len(out) >= limit:
                return False
            info = entry.stat(follow_symlinks=False)
            kind = _kind(info.st_mode)
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            out.append({"path": rel, "type": kind, "size": info.st_size, "mtime": int(info.st_mtime)})
            if kind == "dir" and depth > 1:
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # replaced by a link meanwhile, or unreadable: listed, not entered
                try:
                    if not self._list_into(child, rel, depth - 1, limit, out, top=False):
                        return False
                finally:
                    os.close(child)
        return True

    def open_append(self, path: str, *, create: bool) -> int:
        """A write descriptor (O_APPEND) of a regular file under the root, writable by tools."""
        parts = self.tool_parts(path, "write")
        dir_fd = self._walk(path, parts[:-1], create=False)
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
            try:
                fd = os.open(parts[-1], flags | (os.O_CREAT if create else 0), 0o600, dir_fd=dir_fd)
            except FileNotFoundError:
                raise PathRefused(f"{path}: no such file (set create to make it)") from None
            except OSError as exc:
                raise self._explain(dir_fd, parts[-1], path, "/".join(parts), exc) from None
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathRefused(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        return fd

    def delete(self, path: str) -> dict[str, object]:
        """Move a regular file into ``state/trash/<UTC time>-<id>/<path>``: gone for tools, kept for the operator."""
        parts = self.tool_parts(path, "write")
        dir_fd = self._walk(path, parts[:-1], create=False)
        try:
            try:
                mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise PathRefused(f"{path}: no such file") from None
            if not stat.S_ISREG(mode):
                raise PathRefused(f"{path}: not a regular file (only files are deleted, never links or directories)")
            batch = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
            kept = [*TRASH, batch, *parts]
            trash_fd = self._walk("/".join(kept), kept[:-1], create=True)
            try:
                os.rename(parts[-1], parts[-1], src_dir_fd=dir_fd, dst_dir_fd=trash_fd)
                os.fsync(dir_fd)
            finally:
                os.close(trash_fd)
        finally:
            os.close(dir_fd)
        return {"deleted": path, "kept_as": "/".join(kept)}

    def open_run_log(self, run_id: str) -> tuple[int, int]:
        """A read-only descriptor of ``logs/run_<run_id>.jsonl`` and its size: the log of the calling run,
        which its tools may summarise although logs/ is otherwise the suite's."""
        if not re.fullmatch(RUN_ID_PATTERN, run_id or ""):
            raise PathRefused(f"run id {run_id!r} is not a run id")
        path = f"logs/run_{run_id}.jsonl"
        dir_fd = self._walk(path, ["logs"], create=False)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
            try:
                fd = os.open(f"run_{run_id}.jsonl", flags, dir_fd=dir_fd)
            except FileNotFoundError:
                raise PathRefused(f"{path}: no such file (the run has no log yet)") from None
            except OSError as exc:
                raise self._explain(dir_fd, f"run_{run_id}.jsonl", path, path, exc) from None
        finally:
            os.close(dir_fd)
        return _regular_file(fd, path)

    # --- memory streams ---------------------------------------------------------------------------------

    def open_stream(self, stream: str, *, append: bool) -> int | None:
        """``memory/<stream>.jsonl`` for appending (created when missing) or reading (None when missing)."""
        try:
            check_name(stream)
        except StreamError as exc:
            raise PathRefused(str(exc)) from None
        if append and is_typed(stream):
            raise PathRefused(f"memory/{stream} is written by the agent components only (a typed stream)")
        dir_fd = self._walk("memory", ["memory"], create=append)
        try:
            name = stream + ".jsonl"
            flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            flags |= (os.O_WRONLY | os.O_APPEND | os.O_CREAT) if append else os.O_RDONLY
            try:
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise self._explain(dir_fd, name, f"memory/{name}", f"memory/{name}", exc) from None
        finally:
            os.close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathRefused(f"memory/{stream}.jsonl is not a regular file")
        os.set_blocking(fd, True)
        return fd


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "other"


def _regular_file(fd: int, path: str) -> tuple[int, int]:
    """``(fd, size)`` of an opened tool path that must be a regular file (else closed and refused), blocking."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise PathRefused(f"{path}: not a regular file")
    os.set_blocking(fd, True)
    return fd, info.st_size

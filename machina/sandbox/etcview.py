"""The sandbox's ``/etc``: a private copy of the few world-readable entries a program needs, bound as one.

Binding each entry separately costs bubblewrap a mount apiece (about 3 ms per sandbox for twenty); one
directory costs one.  The copy is rebuilt when a source changes (checked at most every few seconds, so an
edited resolv.conf reaches new sandboxes quickly), into a new directory: a sandbox being set up never sees
a half-written one.  Only entries readable by everyone are copied, and never /etc/ssl/private or the like:
the list is explicit.

Where it lives: ``<parent>/machina-etc.<pid>/<generation>`` (:class:`machina.owned.OwnedDir`).  The toolhost
passes its runtime directory ($RUNTIME_DIRECTORY under systemd, else the root's ``run/``), installs the
view as the default at start and closes it at every stop, so nothing is left; a view left by a SIGKILLed
toolhost is swept at the next start.  A program that launches sandboxes without a toolhost gets a view
under the temporary directory, removed at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator

from machina.exitcodes import MachinaError
from machina.owned import NO_ROOM, OwnedDir, cannot_create, temp_root
from machina.sandbox.policy import SandboxUnavailable

log = logging.getLogger(__name__)

ETC_ENTRIES = (
    "alternatives",  # awk -> mawk and friends
    "group",
    "host.conf",
    "hosts",
    "gai.conf",
    "ld.so.cache",
    "localtime",
    "nsswitch.conf",
    "passwd",
    "protocols",
    "resolv.conf",
    "services",
    "ssl/certs",
)
#: The name-service modules that work inside a sandbox: the copied files, and DNS over the network namespace
#: of a ``net`` tool.  Every other module (systemd, resolve, mdns, sss, ldap, db) asks a daemon through a
#: socket or reads a database the sandbox does not have; glibc would still load its library (and the
#: systemd module libcap and libm with it) on the first lookup, which setpriv makes in every sandbox.
NSS_MODULES = ("files", "dns")
CHECK_EVERY_S = 2.0
VIEW_PREFIX = "machina-etc"


class EtcView:
    def __init__(
        self,
        parent: str,
        source: str = "/etc",
        entries: tuple[str, ...] = ETC_ENTRIES,
        check_every: float = CHECK_EVERY_S,
    ):
        self.owner = OwnedDir(parent, VIEW_PREFIX)
        self.source = source
        self.entries = entries
        self.check_every = check_every
        self._lock = threading.Lock()
        self._path: str | None = None
        self._old: str | None = None
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked = 0.0
        self._generation = 0
        self._closed = False

    def open(self) -> str:
        """Make the owner directory now (sweeping dead predecessors'); MachinaError, exit 73, if it cannot."""
        with self._lock:
            self._closed = False
            return self.owner.create()

    def path(self, mountpoints: Iterable[str] = ()) -> str:
        """The current copy, rebuilt first if a source changed.

        ``mountpoints`` are host paths below ``/etc`` that a sandbox binds over the view: each gets an empty
        directory (or file) of its kind in the copy, since nothing can be created in it once it is mounted
        read-only.  Only empty mount points are added, never content.
        """
        with self._lock:
            if self._closed:
                # A sandbox still being prepared while its process stops (a pool's spawner thread outliving
                # the toolhost's close): a new copy would recreate the directory close() just removed.
                raise SandboxUnavailable(f"the sandbox's /etc copy in {self.owner.parent} is closed: stopping")
            now = time.monotonic()
            if self._path is None or now - self._checked >= self.check_every:
                self._checked = now
                signature = self._scan()
                if self._path is None:
                    self._rebuild(signature)  # no copy yet: a full disk is the caller's error (exit 73 at start)
                elif signature != self._signature:
                    try:
                        self._rebuild(signature)
                    except MachinaError as exc:  # keep binding the last good copy; try again next check
                        log.warning("sandboxes keep the previous /etc copy: %s", exc)
            assert self._path is not None
            for host_path in mountpoints:
                _mount_point(host_path, os.path.join(self._path, os.path.relpath(host_path, self.source)))
            return self._path

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        found = []
        for entry in self.entries:
            with contextlib.suppress(OSError):
                info = os.stat(os.path.join(self.source, entry))
                found.append((entry, info.st_mtime_ns, info.st_size))
        return tuple(found)

    def _rebuild(self, signature: tuple[tuple[str, int, int], ...]) -> None:
        self._generation += 1
        target = os.path.join(self.owner.create(), str(self._generation))
        os.mkdir(target, 0o755)
        os.chmod(target, 0o755)  # noqa: S103 - the tool uid must read it; it holds only public files
        for entry, _, _ in signature:
            try:
                _copy(os.path.join(self.source, entry), os.path.join(target, entry))
            except OSError as exc:
                if exc.errno in NO_ROOM:  # a full or read-only disk: say so, never bind a half copy
                    shutil.rmtree(target, ignore_errors=True)
                    raise cannot_create(os.path.join(target, entry), exc) from None
                log.debug("%s not copied into the sandbox's /etc: %s", entry, exc)  # vanished or unreadable
        if self._old:
            shutil.rmtree(self._old, ignore_errors=True)  # two generations back: no sandbox is still binding it
        self._old, self._path, self._signature = self._path, target, signature

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.owner.close()  # every generation with it
            self._old = self._path = None
            self._signature = ()


def _mount_point(host_path: str, target: str) -> None:
    """An empty directory (or file) at ``target`` for ``host_path`` to be bound on, unless one is there."""
    if os.path.lexists(target):
        return
    directory = os.path.dirname(target)
    missing: list[str] = []
    while not os.path.lexists(directory):
        missing.insert(0, directory)
        directory = os.path.dirname(directory)
    for step in missing:
        os.mkdir(step)
        os.chmod(step, 0o755)  # noqa: S103 - traversable by the tool uid whatever the umask; empty
    if os.path.isdir(host_path):
        os.mkdir(target)
        os.chmod(target, 0o755)  # noqa: S103 - as above
    else:
        with open(target, "a"):
            pass
        os.chmod(target, 0o644)


def _copy(src: str, dst: str) -> None:
    info = os.stat(src)
    if not info.st_mode & stat.S_IROTH:
        return  # never copy what not everyone may read
    parent = os.path.dirname(dst)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if stat.S_ISDIR(info.st_mode):
        shutil.copytree(src, dst, symlinks=True)
        os.chmod(dst, 0o755)  # noqa: S103 - as above
    elif os.path.basename(src) == "nsswitch.conf":
        with open(src, encoding="utf-8", errors="surrogateescape") as source:
            text = sandbox_nsswitch(source.read())
        with open(dst, "w", encoding="utf-8", errors="surrogateescape") as target:
            target.write(text)
        os.chmod(dst, 0o644)
    else:
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)


def sandbox_nsswitch(text: str) -> str:
    """The host's nsswitch.conf with only the modules of :data:`NSS_MODULES` left on each database line,
    each with the ``[STATUS=action]`` items that follow it; a line left with none says ``files``."""
    lines = []
    for line in text.splitlines():
        database, colon, sources = line.partition(":")
        if not colon or line.lstrip().startswith("#"):
            lines.append(line)
            continue
        kept: list[str] = []
        keeping = False
        for token in re.findall(r"\[[^\]]*\]|[^\s\[]+", sources.split("#", 1)[0]):
            if not token.startswith("["):
                keeping = token in NSS_MODULES
            if keeping:
                kept.append(token)
        lines.append(f"{database}: {' '.join(kept) or 'files'}")
    return "\n".join(lines) + "\n"


_default: EtcView | None = None
_default_lock = threading.Lock()


def default_view() -> EtcView:
    """The installed view (the toolhost's); else one under the temporary directory, removed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = EtcView(temp_root())
            atexit.register(_default.close)
        return _default


def install(view: EtcView | None) -> EtcView | None:
    """Make ``view`` the one sandboxes bind (None: back to the lazy default); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, view
        return previous


@contextlib.contextmanager
def installed_under(parent: str) -> Iterator[EtcView]:
    """A view in ``parent`` (a daemon's runtime directory) for the sandboxes this process starts, removed
    when the block ends; a SIGKILL leaves it where the next start sweeps it, never in the temporary directory."""
    view = EtcView(parent)
    view.open()
    previous = install(view)
    try:
        yield view
    finally:
        install(previous)
        view.close()

"""The test suite's guard against leftovers in /tmp and /dev/shm (issue 19): what a run creates, it removes.

Other engineers' processes write to the machine's /tmp while our tests run, so "anything new in /tmp" would
accuse the wrong people.  The guard is exact where it can be and narrow where it cannot:

- The run gets a private ``$TMPDIR`` (``<tmp>/machina-tests.<pid>``, swept by the next run if this one is
  killed); every process the tests start inherits it unless a test builds a clean environment on purpose.
  Every entry left in it at the end is ours and fails the run.  pytest's own ``tmp_path`` base is kept in
  the real temporary directory (``PYTEST_DEBUG_TEMPROOT``) and is excepted: pytest keeps the last three
  runs' directories by design.
- In the real ``/tmp`` and ``/dev/shm``, a process started with a clean environment may still write: there,
  entries created during the run whose names are Machina's (``machina-<what>.<pid>``, the only form its
  code creates) and whose pid no longer runs fail the run.  A live pid is somebody's running daemon.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

from machina.owned import LOCK_NAME, OwnedDir
from machina.proctree import pid_alive

PRIVATE_PREFIX = "machina-tests"
SHARED_PLACES = ("/tmp", "/dev/shm")  # watched, never written to
_OURS = re.compile(r"\.?machina-[a-z-]+\.(\d+)")


@dataclass
class Guard:
    real_tmp: str
    owner: OwnedDir
    before: dict[str, set[str]]

    @classmethod
    def begin(cls) -> Guard:
        """Make the private $TMPDIR, point this process (and what it starts) at it, note /tmp and /dev/shm."""
        real_tmp = tempfile.gettempdir()
        owner = OwnedDir(real_tmp, PRIVATE_PREFIX, 0o711)  # others may reach what a test shares on purpose
        private = owner.create()  # (and a run that was killed is swept here)
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", real_tmp)  # pytest's tmp_path base stays outside
        os.environ["TMPDIR"] = private
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again
        places = {*SHARED_PLACES, real_tmp}
        return cls(real_tmp, owner, {place: _entries(place) for place in places})

    def leftovers(self) -> list[str]:
        """Everything the run left: all of the private $TMPDIR, and Machina's dead-owner names elsewhere."""
        private = self.owner.path
        found = [os.path.join(private, name) for name in sorted(_entries(private) - {LOCK_NAME})]
        for place, before in sorted(self.before.items()):
            for name in sorted(_entries(place) - before):
                match = _OURS.fullmatch(name)
                if match and not pid_alive(int(match.group(1))):
                    found.append(os.path.join(place, name))
        return found

    def end(self) -> None:
        os.environ["TMPDIR"] = self.real_tmp
        tempfile.tempdir = None
        self.owner.close()


def _entries(place: str) -> set[str]:
    try:
        return set(os.listdir(place))
    except OSError:
        return set()


def describe(paths: list[str]) -> str:
    shown = "\n  ".join(paths[:50])
    more = f"\n  ... and {len(paths) - 50} more" if len(paths) > 50 else ""
    return f"the test run left {len(paths)} entr{'y' if len(paths) == 1 else 'ies'} behind:\n  {shown}{more}"


def open_fds() -> set[int]:
    """This process's open descriptors: compared before and after, what a test left open."""
    return {int(name) for name in os.listdir("/proc/self/fd")}

"""Exit codes shared by every Machina executable.

The values follow BSD sysexits(3) so that systemd (``RestartPreventExitStatus=``), cron and shell
pipelines can act on them.  ``machina(7)`` lists them; keep that page in step with this enum.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: The command ran and found problems (a lint finding, a failed verification, a goal not done).
    FAILURE = 1
    #: Wrong command-line usage (unknown option, missing argument).
    USAGE = 64
    #: The input data was malformed (bad JSON, schema violation).
    DATAERR = 65
    #: An input file did not exist or was unreadable.
    NOINPUT = 66
    #: A named thing (job, lease, tool) does not exist.
    NOTFOUND = 67
    #: A service the command needs is not running or not reachable (socket, HTTP endpoint).
    UNAVAILABLE = 69
    #: An internal error: a bug.
    SOFTWARE = 70
    #: An operating-system error (fork failed, out of file descriptors).
    OSERR = 71
    #: An output file could not be created (disk full, read-only file system).
    CANTCREAT = 73
    #: An input/output error while reading or writing.
    IOERR = 74
    #: A temporary failure: try again later (rate limited, queue busy).
    TEMPFAIL = 75
    #: The peer answered something that is not our protocol.
    PROTOCOL = 76
    #: Permission denied (auth failed, lease missing, peer not allowed).
    NOPERM = 77
    #: Bad configuration: a bad ``MACHINA_*`` value, a missing ``MACHINA_ROOT``.
    CONFIG = 78
    #: Interrupted by SIGINT (128 + 2), as shells report it.
    INTERRUPTED = 130
    #: The reader of our standard output went away (128 + SIGPIPE), e.g. ``machina queue ls | head``.
    SIGPIPE = 141


class MachinaError(Exception):
    """An error meant for the operator: one clear line, and the exit code it should cause."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

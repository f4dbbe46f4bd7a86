"""The queue's exceptions.  Each is a MachinaError, so the CLI turns it into one line and an exit code.

HTTP mapping for machina-enqueued: InvalidRequest 400, DedupConflict 409, QueueNotWritable 503,
QueuedNotDurable 500 (naming the job), DedupPending 503, JobNotFound 404.
"""

from __future__ import annotations

import errno as errno_mod

from machina.exitcodes import ExitCode, MachinaError

#: errno values that mean "this file system will not take the job": the client must hear 503, not "queued".
NOT_WRITABLE_ERRNOS = frozenset(
    {
        errno_mod.ENOSPC,
        errno_mod.EDQUOT,
        errno_mod.EFBIG,
        errno_mod.EROFS,
        errno_mod.EIO,
        errno_mod.EACCES,
        errno_mod.EPERM,
        errno_mod.EMFILE,
        errno_mod.ENFILE,
    }
)


class QueueError(MachinaError):
    """Base class of every queue error."""

    exit_code = ExitCode.SOFTWARE


class InvalidRequest(QueueError):
    """The request is not a valid run request (not JSON, not an object, no goal_id, a reserved key ...)."""

    exit_code = ExitCode.DATAERR

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid request: {reason}")
        self.reason = reason


class DedupConflict(QueueError):
    """The request_id was used within MACHINA_DEDUP_TTL_MS for a request with a different body."""

    exit_code = ExitCode.DATAERR

    def __init__(self, request_id: str, first_name: str) -> None:
        super().__init__(f"request_id {request_id!r} was already used for a different request (queued as {first_name})")
        self.request_id = request_id
        self.first_name = first_name


class DedupPending(QueueError):
    """Another copy of this request_id is still being written after the wait allowed for it: nothing was
    queued by this copy; sending it again later is safe (it is deduplicated then)."""

    exit_code = ExitCode.TEMPFAIL

    def __init__(self, request_id: str, waited_s: float) -> None:
        super().__init__(
            f"request_id {request_id!r} is still being queued by another request after {waited_s:g} s: "
            "nothing was queued by this one; try again"
        )
        self.request_id = request_id


class QueueNotWritable(QueueError):
    """The queue's file system refused the write (full, read-only, over quota, file too large, I/O error).

    Raised before anything is acknowledged; no partial job is left behind.
    """

    exit_code = ExitCode.CANTCREAT

    def __init__(self, what: str, error: OSError) -> None:
        code = error.errno or 0
        name = errno_mod.errorcode.get(code, str(code))
        super().__init__(f"queue not writable: {what}: {name} ({error.strerror or error})")
        self.errno = code
        self.errno_name = name


class QueueUnavailable(QueueNotWritable):
    """The queue's database could not be reached, or dropped the connection mid-transaction (a restart, a
    network partition).  A QueueNotWritable, so callers that wait out a full disk wait this out too.  The
    message never carries the password."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, what: str, detail: str) -> None:
        QueueError.__init__(self, f"queue database unavailable: {what}: {detail}")
        self.errno = errno_mod.ECONNREFUSED
        self.errno_name = "UNAVAILABLE"


class QueuedNotDurable(QueueError):
    """The job was placed in the inbox, its fsync failed, and it could not be taken back (a worker may have
    claimed it already): it is queued and may run, but may not survive a crash.  Names the job, so that a
    client does not send it again as new (a resend with the same request_id is answered with this name)."""

    exit_code = ExitCode.IOERR

    def __init__(self, name: str, error: QueueError | OSError) -> None:
        super().__init__(f"job {name} was queued, but making it durable failed ({error}): it may run; do not resend it")
        self.name = name


class JobNotFound(QueueError):
    exit_code = ExitCode.NOTFOUND

    def __init__(self, name: str, detail: str = "no such job") -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name


class ClaimLost(QueueError):
    """The claim is no longer ours: the job was recovered (owner silent too long) or moved by an operator."""

    exit_code = ExitCode.TEMPFAIL


class WorkerIdInUse(QueueError):
    """Another live process holds this worker id's claim registry."""

    exit_code = ExitCode.TEMPFAIL


def is_not_writable(error: OSError) -> bool:
    return error.errno in NOT_WRITABLE_ERRNOS

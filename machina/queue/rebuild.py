"""Jobs a crash left unplaced, placed again from their WAL records.

With the WAL as the commit point (DESIGN.md section 3) a job is acknowledged once its ``ENQ`` record, which
carries the job's canonical body, is synced; its ``inbox/`` file is written afterwards without an fsync of
its own.  A crash between the two (kill -9 after the sync, or a power cut before the kernel wrote the file
back) leaves a record without its file.  :func:`rebuild_missing` places those files again.

It is given only records of *sealed* segments (no writer holds them: every placement their writer promised
is done or never will be, see :meth:`machina.queue.wal.WalWriter.commit_append`) that no checkpoint has yet
declared durable, and it runs under the checkpoint lock, so one process at a time.  A job counts as present
when any attempt of it is in any state directory or has a result in ``out/``; the directories are listed in
the order jobs flow through them (inbox, processing, out, then the rest), so a job moving on while they are
listed is seen in the later one.  Placing uses ``RENAME_NOREPLACE``: a file that turned up meanwhile wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from machina.audit.canonical import canonical as canonical_bytes
from machina.fsutil import PRIVATE_FILE
from machina.log import fields
from machina.queue.durable import create_new, place
from machina.queue.names import JobRef, parse_file, parse_result, parse_retry

log = logging.getLogger(__name__)

#: Directories listed for presence, in the order a job moves through them.
PRESENCE_ORDER = ("inbox", "processing", "out", "retry", "asked", "done", "failed", "dlq")


def present_stems(dirs: Mapping[str, str], among: Collection[str] | None = None) -> set[str]:
    """The stem of every job that has a file (any attempt) or a result anywhere in the queue; with ``among``,
    only those of its stems (the directories are still read whole, but nothing else of a queue of 200k jobs
    is held: a checkpoint's memory stays flat however many jobs wait)."""
    stems: set[str] = set()
    for state in PRESENCE_ORDER:
        parse = _PARSERS[state]
        try:
            with os.scandir(dirs[state]) as entries:
                if among is None:
                    names = [entry.name for entry in entries]
                else:
                    names = [entry.name for entry in entries if _stem_guess(entry.name, state) in among]
        except FileNotFoundError:
            continue
        for file in names:
            ref = parse(file)
            if ref is not None:
                stems.add(ref.stem)
    return stems


def _retry_ref(file: str) -> JobRef | None:
    parsed = parse_retry(file)
    return parsed[1] if parsed else None


_PARSERS: dict[str, Callable[[str], JobRef | None]] = {
    **{state: parse_file for state in PRESENCE_ORDER},
    "out": parse_result,
    "retry": _retry_ref,
}
#: ``p{4}_rq_{13}_{10}``: the fixed part of every stem (names.py), then an optional ``_rid{8}``.
_STEM_LEN = 33
_RID_LEN = 12
_RETRY_PREFIX_LEN = len("retry_") + 13 + 1


def _stem_guess(file: str, state: str) -> str:
    """The stem a file of ``state`` would have if it is a job's, by position alone (no regex): what a scan
    of a big directory compares with the few stems it looks for; a hit is then parsed properly."""
    if state == "retry":
        file = file[_RETRY_PREFIX_LEN:]
    if file.startswith("_rid", _STEM_LEN):
        return file[: _STEM_LEN + _RID_LEN]
    return file[:_STEM_LEN]


def rebuild_missing(records: Iterable[dict[str, Any]], dirs: Mapping[str, str], cancelled: Mapping[str, int]) -> int:
    """Place the inbox file of every ``ENQ`` record with a body whose job is nowhere; the number placed.

    ``records`` is iterated twice (:class:`machina.queue.wal.SegmentRecords` decodes them as it goes): once
    for the stems wanted, once more only when one of them is missing, for its body."""
    wanted = {ref.stem for record in records if (ref := _wanted(record, cancelled)) is not None}
    if not wanted:
        return 0
    missing = wanted - present_stems(dirs, wanted)
    placed = 0
    for record in records if missing else ():
        ref = _wanted(record, cancelled)
        if ref is None or ref.stem not in missing:
            continue
        missing.discard(ref.stem)
        if _place(dirs, ref.file, canonical_bytes(record["job"])):
            placed += 1
            log.warning(
                "job %s was committed to the WAL but a crash lost its file: placed again from its record",
                ref.name,
                extra=fields(job=ref.name),
            )
    return placed


def _wanted(record: dict[str, Any], cancelled: Mapping[str, int]) -> JobRef | None:
    if record["t"] != "ENQ" or not isinstance(record.get("job"), dict) or record["name"] in cancelled:
        return None
    return parse_file(record["name"])


def _place(dirs: Mapping[str, str], file: str, data: bytes) -> bool:
    tmp = os.path.join(dirs["tmp"], f"{os.getpid()}_{secrets.token_hex(6)}.tmp")
    os.close(create_new(tmp, data, PRIVATE_FILE))
    try:
        place(tmp, os.path.join(dirs["inbox"], file))
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return True

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
from collections.abc import Iterable, Mapping
from typing import Any

from machina.audit.canonical import canonical as canonical_bytes
from machina.fsutil import PRIVATE_FILE
from machina.log import fields
from machina.queue.durable import create_new, place
from machina.queue.names import parse_file, parse_result, parse_retry

log = logging.getLogger(__name__)

#: Directories listed for presence, in the order a job moves through them.
PRESENCE_ORDER = ("inbox", "processing", "out", "retry", "asked", "done", "failed", "dlq")


def present_stems(dirs: Mapping[str, str]) -> set[str]:
    """The stem of every job that has a file (any attempt) or a result anywhere in the queue."""
    stems: set[str] = set()
    for state in PRESENCE_ORDER:
        try:
            with os.scandir(dirs[state]) as entries:
                names = [entry.name for entry in entries]
        except FileNotFoundError:
            continue
        for file in names:
            if state == "out":
                ref = parse_result(file)
            elif state == "retry":
                parsed = parse_retry(file)
                ref = parsed[1] if parsed else None
            else:
                ref = parse_file(file)
            if ref is not None:
                stems.add(ref.stem)
    return stems


def rebuild_missing(records: Iterable[dict[str, Any]], dirs: Mapping[str, str], cancelled: Mapping[str, int]) -> int:
    """Place the inbox file of every ``ENQ`` record with a body whose job is nowhere; the number placed."""
    wanted = [r for r in records if r["t"] == "ENQ" and isinstance(r.get("job"), dict) and r["name"] not in cancelled]
    if not wanted:
        return 0
    stems = present_stems(dirs)
    placed = 0
    for record in wanted:
        ref = parse_file(record["name"])
        if ref is None or ref.stem in stems:
            continue
        if _place(dirs, ref.file, canonical_bytes(record["job"])):
            stems.add(ref.stem)
            placed += 1
            log.warning(
                "job %s was committed to the WAL but a crash lost its file: placed again from its record",
                ref.name,
                extra=fields(job=ref.name),
            )
    return placed


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

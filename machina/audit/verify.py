"""Verifying a run log: canonical form, the hash chain, the key, and the structure of the run.

Checked, in order, for every line: it is a complete line of canonical JSON (a line re-spelled by hand fails
even when its meaning is unchanged), its ``seq`` is its position, its chain link and hash are right.  Then
the run as a whole: it starts with ``start`` and ends with one ``done``; every event names the same
``run_id`` and ``request_id``; steps never go back; and the state digests join up (each tool call starts
from the state the previous one left, a failed call leaves it unchanged, and ``done`` reports the last).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from machina.audit.canonical import canonical, loads_strict
from machina.audit.chain import ALG_HMAC, ALG_SHA256, GENESIS, Chain
from machina.audit.runlog import EVENTS, LOG_FORMAT

MAX_LOG_BYTES = 1 << 30  # a run log beyond 1 GiB is not something we wrote


@dataclass
class LogReport:
    path: str
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    in_progress: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return bool(self.events) and self.events[-1].get("event") == "done"

    @property
    def status(self) -> str | None:
        return self.events[-1].get("status") if self.complete else None

    @property
    def start(self) -> dict[str, Any]:
        return self.events[0] if self.events else {}


def is_in_progress(path: str) -> bool:
    """Whether a writer still holds the log's lock (its run is going on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def verify_log(
    path: str, key: str | None = None, *, allow_unkeyed: bool = False, allow_incomplete: bool = False
) -> LogReport:
    """Check one run log; every problem found is one line in ``report.problems``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_LOG_BYTES + 1)
    except OSError as exc:
        report = LogReport(path)
        report.problems.append(f"cannot read: {exc.strerror or exc}")
        return report
    return verify_data(
        data,
        path,
        key,
        allow_unkeyed=allow_unkeyed,
        allow_incomplete=allow_incomplete,
        in_progress=lambda: is_in_progress(path),
    )


def verify_data(
    data: bytes,
    path: str,
    key: str | None = None,
    *,
    allow_unkeyed: bool = False,
    allow_incomplete: bool = False,
    in_progress: Callable[[], bool] = lambda: False,
) -> LogReport:
    """Check the bytes of a run log already read (``in_progress`` tells whether its writer still holds it)."""
    report = LogReport(path)
    if len(data) > MAX_LOG_BYTES:
        report.problems.append("larger than 1 GiB: not a run log")
        return report
    if not data:
        report.problems.append("empty log")
        return report
    lines = data.split(b"\n")
    if lines[-1] != b"":
        report.problems.append(f"line {len(lines)}: torn last line (no newline)")
    for number, raw in enumerate(lines[:-1], 1):
        record = _parse_line(raw, number, report)
        if record is None:
            return report  # the chain cannot be followed past an unreadable line
        report.events.append(record)
    if not _check_chain(report, key, allow_unkeyed):
        return report
    _check_structure(report)
    if not report.complete:
        report.in_progress = in_progress()
        if not allow_incomplete:
            report.problems.append(
                "incomplete: run in progress (its writer holds the lock)"
                if report.in_progress
                else "incomplete: no done event (the run's process died, or the tail was cut)"
            )
    return report


def _parse_line(raw: bytes, number: int, report: LogReport) -> dict[str, Any] | None:
    try:
        record = loads_strict(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        report.problems.append(f"line {number}: not JSON ({exc})")
        return None
    if not isinstance(record, dict):
        report.problems.append(f"line {number}: not a JSON object")
        return None
    if canonical(record) != raw:
        report.problems.append(f"line {number}: not in canonical form (edited by hand?)")
        return None
    return record


def _chain_for(start: dict[str, Any], key: str | None, allow_unkeyed: bool, problems: list[str]) -> Chain | None:
    alg = start.get("chain_alg")
    if alg == ALG_HMAC:
        if not key:
            problems.append("log is keyed (hmac-sha256): set MACHINA_AUDIT_KEY to verify it")
            return None
        chain = Chain(key)
        if chain.key_id != start.get("key_id"):
            problems.append(
                f"wrong MACHINA_AUDIT_KEY: key id {chain.key_id}, the log was written with {start.get('key_id')}"
            )
            return None
        return chain
    if alg == ALG_SHA256:
        if key and not allow_unkeyed:
            problems.append(
                "log is not keyed but MACHINA_AUDIT_KEY is set: a rewritten log would look like this "
                "(use --allow-unkeyed for logs written before the key)"
            )
            return None
        return Chain(None)
    problems.append(f"line 1: unknown chain_alg {alg!r}")
    return None


def _check_chain(report: LogReport, key: str | None, allow_unkeyed: bool) -> bool:
    events = report.events
    if not events:
        return False
    chain = _chain_for(events[0], key, allow_unkeyed, report.problems)
    if chain is None:
        return False
    prev = GENESIS
    for number, record in enumerate(events, 1):
        if record.get("seq") != number - 1:
            report.problems.append(f"line {number}: seq {record.get('seq')!r}, expected {number - 1}")
            return False
        if not chain.check(prev, record):
            report.problems.append(f"line {number}: chain hash mismatch (changed, deleted or reordered lines)")
            return False
        prev = record["chain_hash"]
    return True


def _check_structure(report: LogReport) -> None:
    events, problems = report.events, report.problems
    start = events[0]
    if start.get("event") != "start":
        problems.append("line 1: the first event is not start")
        return
    if start.get("log_format") != LOG_FORMAT:
        problems.append(f"line 1: log_format {start.get('log_format')!r}, expected {LOG_FORMAT}")
    run_id, request_id = start.get("run_id"), start.get("request_id")
    state = start.get("state_digest")
    last_step = 0
    for number, record in enumerate(events, 1):
        event = record.get("event")
        where = f"line {number} ({event})"
        if event not in EVENTS:
            problems.append(f"{where}: unknown event")
        if record.get("run_id") != run_id or record.get("request_id") != request_id:
            problems.append(f"{where}: run_id/request_id differ from the start event")
        if not isinstance(record.get("request_id"), str) or not record.get("request_id"):
            problems.append(f"{where}: no request_id")
        if event == "start" and number != 1:
            problems.append(f"{where}: a second start event")
        if event == "done" and number != len(events):
            problems.append(f"{where}: events after done")
        step = record.get("step")
        if step is not None:
            if not isinstance(step, int) or step < last_step:
                problems.append(f"{where}: step {step!r} goes back (last {last_step})")
            else:
                last_step = step
        if event == "tool":
            state = _check_tool(record, state, where, problems)
        elif event == "done" and record.get("state_digest") != state:
            problems.append(f"{where}: final state digest differs from the last committed state")


def _check_tool(record: dict[str, Any], state: Any, where: str, problems: list[str]) -> Any:
    before, after = record.get("state_before"), record.get("state_after")
    if before != state:
        problems.append(f"{where}: state_before does not follow the previous state")
    if not record.get("ok") and after != before:
        problems.append(f"{where}: a failed tool call changed the state")
    return after


def run_logs(logs_dir: str) -> list[str]:
    """Every ``run_*.jsonl`` in a logs directory, in name order."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(
            os.path.join(logs_dir, name)
            for name in os.listdir(logs_dir)
            if name.startswith("run_") and name.endswith(".jsonl")
        )
    return []

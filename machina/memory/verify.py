"""``reindex --verify``: every line a JSON object, typed records fit their schema, no line written twice,
and the search index in step with the streams.

Read-only.  :func:`verify_memory` returns the problems; the command prints them and exits 1 when there are
any (cron-friendly).  An index that was never built is not a problem (the first query builds it), nor is one
that lags behind the newest appends (the next query catches up); an index that holds lines a stream no
longer has, or misses lines before its end, is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from machina.memory.index import MemoryIndex, index_path
from machina.memory.schemas import record_problem
from machina.memory.streams import Line, is_typed, read_lines, stream_names, stream_path


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    why: str
    raw: bytes

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}"


@dataclass
class StreamCheck:
    stream: str
    path: str
    parsed_offsets: list[int] = field(default_factory=list)  # every line that is a JSON object (the index's)
    good: list[bytes] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


@dataclass
class Report:
    streams: list[StreamCheck] = field(default_factory=list)
    index_problems: list[str] = field(default_factory=list)
    index_built: bool = False

    @property
    def bad_lines(self) -> int:
        return sum(len(s.bad) for s in self.streams)

    @property
    def ok(self) -> bool:
        return not self.bad_lines and not self.index_problems


def line_problem(stream: str, line: Line, seen: set[bytes]) -> str | None:
    if line.problem is not None:
        return line.problem
    if line.raw in seen:
        return "duplicate of an earlier line (the same bytes written twice)"
    seen.add(line.raw)
    if is_typed(stream):
        assert line.entry is not None
        if not isinstance(line.entry.get("record"), dict):
            return f"a {stream} line needs a record object"
        problem = record_problem(stream, line.entry["record"])
        if problem:
            return f"schema of {stream}: {problem}"
    return None


def check_stream(memory_dir: str, stream: str) -> StreamCheck:
    path = stream_path(memory_dir, stream)
    check = StreamCheck(stream, path)
    seen: set[bytes] = set()
    for line in read_lines(path):
        if line.entry is not None:
            check.parsed_offsets.append(line.offset)
        why = line_problem(stream, line, seen)
        if why is None:
            check.good.append(line.raw)
        else:
            check.bad.append(BadLine(path, line.number, why, line.raw))
    return check


def check_index(memory_dir: str, state_dir: str, checks: list[StreamCheck]) -> list[str]:
    """How the index disagrees with the streams (an index never built: no disagreement)."""
    if not os.path.exists(index_path(state_dir)):
        return []
    problems = []
    with MemoryIndex(memory_dir, state_dir, readonly=True) as index:
        indexed = index.indexed()
        for check in checks:
            have = index.offsets(check.stream)
            # An index that lags behind the newest appends is in step (the next query catches up); one that
            # holds lines the stream no longer has, or misses lines before its end, is not.
            if check.stream in indexed and have != check.parsed_offsets[: len(have)]:
                problems.append(
                    f"index: {check.path}: {len(have)} line(s) indexed, {len(check.parsed_offsets)} in the stream "
                    "(run reindex --rebuild)"
                )
        for stream in sorted(set(indexed) - {c.stream for c in checks}):
            problems.append(f"index: memory/{stream}.jsonl is indexed but no longer exists (run reindex --rebuild)")
    return problems


def verify_memory(memory_dir: str, state_dir: str) -> Report:
    report = Report(streams=[check_stream(memory_dir, s) for s in stream_names(memory_dir)])
    report.index_built = os.path.exists(index_path(state_dir))
    report.index_problems = check_index(memory_dir, state_dir, report.streams)
    return report

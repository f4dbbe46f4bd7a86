"""Self-evolution (``MACHINA_SELF_EVOLVE=1``, refused under ``MACHINA_PROFILE=prod``): the model proposes one
change to a file the agent owns, the regression gate proves it no worse on a scratch copy, and only then is it
written into the root, with the previous version kept so it can be put back.

What the agent owns: ``prompts/``, ``skills/`` and ``utils/`` under the root, text and Python files only.  Never
permissions, configuration, the sandbox, the queue or the suite's own code: those live outside these
directories (and the package itself is not under the root at all), so a proposal naming anything else is
refused before the gate runs.  The proposal is untrusted model output: its path is normalised and checked, a
symlink anywhere on the way is refused, its size is capped.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from machina.autonomic import gate
from machina.clock import Clock
from machina.fsutil import ensure_dir, write_atomic

OWNED_DIRS = ("prompts", "skills", "utils")
SUFFIXES = (".txt", ".md", ".json", ".py")
MAX_BYTES = 64 * 1024
HISTORY_DIR = "evolution"  # under memory/: previous versions, one file per kept change
NAME = "EV"
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

SYSTEM = (
    "You improve the files an agent owns: prompts, skills and utilities under prompts/, skills/ and utils/. "
    "Propose at most one small change as JSON: "
    '{"path": "prompts/<name>.txt", "content": "<the whole new file>", "why": "<one sentence>"}. '
    "Never touch anything else. A test suite decides whether the change is kept."
)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "maxLength": 200},
        "content": {"type": "string"},
        "why": {"type": "string", "maxLength": 500},
    },
    "required": ["path", "content"],
}


class Refused(ValueError):
    """The proposal names something the agent does not own, or is too large."""


@dataclass(frozen=True)
class Proposal:
    path: str  # relative to the root, checked
    content: bytes
    why: str


@dataclass(frozen=True)
class Result:
    kept: bool
    reason: str
    path: str = ""


def check(answer: dict[str, Any]) -> Proposal:
    """Validate a model's proposal (already matched against ``SCHEMA``) or raise :class:`Refused`."""
    raw = str(answer["path"])
    parts = raw.split("/")
    if raw.startswith("/") or len(parts) < 2 or parts[0] not in OWNED_DIRS:
        raise Refused(f"{raw[:80]!r} is not under {', '.join(d + '/' for d in OWNED_DIRS)}")
    if not all(_PART.fullmatch(p) and p not in (".", "..") for p in parts[1:]):
        raise Refused(f"{raw[:80]!r} has a part that is empty, hidden, '..' or not plain characters")
    if not raw.endswith(SUFFIXES):
        raise Refused(f"{raw[:80]!r}: only {', '.join(SUFFIXES)} files may be changed")
    content = str(answer["content"]).encode()
    if len(content) > MAX_BYTES:
        raise Refused(f"the new {raw} is {len(content)} bytes, more than {MAX_BYTES}")
    return Proposal(raw, content, str(answer.get("why", ""))[:500])


def place(root: str, proposal: Proposal, *, fsync: bool) -> None:
    """Write the file under ``root``, refusing a symlink anywhere on the way (it could point out of the root)."""
    target = os.path.join(root, proposal.path)
    directory = root
    for part in proposal.path.split("/")[:-1]:
        directory = os.path.join(directory, part)
        if os.path.islink(directory):
            raise Refused(f"{directory} is a symbolic link")
        ensure_dir(directory)
    if os.path.islink(target):
        raise Refused(f"{target} is a symbolic link")
    write_atomic(target, proposal.content, fsync=fsync, mode=0o640)


def previous(root: str, proposal: Proposal) -> bytes | None:
    try:
        with open(os.path.join(root, proposal.path), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def keep_history(memory_dir: str, proposal: Proposal, old: bytes | None, clock: Clock, *, fsync: bool) -> str:
    """Record the change and the version it replaced (None: the file is new) so an operator can put it back."""
    directory = os.path.join(memory_dir, HISTORY_DIR)
    ensure_dir(directory)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.time()))
    name = f"{stamp}-{proposal.path.replace('/', '__')}.json"
    doc = {
        "path": proposal.path,
        "why": proposal.why,
        "at": clock.time(),
        "previous": None if old is None else old.decode("utf-8", "replace"),
    }
    write_atomic(os.path.join(directory, name), json.dumps(doc).encode() + b"\n", fsync=fsync)
    return name


def evolve(
    root: str,
    proposal: Proposal,
    argv: Sequence[str],
    timeout_s: float,
    clock: Clock,
    *,
    fsync: bool,
    base_env: dict[str, str] | None = None,
) -> Result:
    """Gate the proposal on a scratch copy; write it into the root only when the gate accepts it."""
    outcome = gate.run_gate(
        root, argv, timeout_s, clock, apply_change=lambda scratch: place(scratch, proposal, fsync=False),
        base_env=base_env,
    )  # fmt: skip
    if not outcome.accepted:
        return Result(False, f"rejected by the regression gate: {outcome.reason}", proposal.path)
    old = previous(root, proposal)
    place(root, proposal, fsync=fsync)
    history = keep_history(os.path.join(root, "memory"), proposal, old, clock, fsync=fsync)
    reason = f"kept {proposal.path} ({outcome.reason}); previous version in memory/{HISTORY_DIR}/{history}"
    return Result(True, reason, proposal.path)

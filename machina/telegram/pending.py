"""Approvals waiting for a button press, kept on disk so a restarted bot resolves or expires them.

One JSON file per approval in ``$MACHINA_ROOT/state/telegram/approvals/<id>.json``, replaced atomically on
every change (never torn by a crash).  A decided or expired approval keeps its file for a day (what was
decided, by whom) and is then removed by :meth:`ApprovalStore.prune`.

"Always" answers become standing approvals of machina.agent.always (``state/agent/always.json``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from machina.fsutil import ensure_dir, write_atomic

log = logging.getLogger(__name__)

PENDING, ALLOWED, DENIED, EXPIRED, ALWAYS = "pending", "allowed", "denied", "expired", "always"
STATES = (PENDING, ALLOWED, DENIED, EXPIRED, ALWAYS)
KEEP_DECIDED_S = 86400.0
_ID = re.compile(r"[0-9a-f]{12}")


@dataclass
class Approval:
    id: str
    chat_id: int
    aid: str
    tier: int
    inputs: dict[str, Any]
    inputs_digest: str
    created_at: float
    expires_at: float
    state: str = PENDING
    message_id: int | None = None
    decided_by: int | None = None
    decided_at: float | None = None
    outcome: str = ""  # what the chat was told when it was decided

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Approval:
        approval = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if not _ID.fullmatch(approval.id) or approval.state not in STATES:
            raise ValueError("not an approval record")
        return approval


def new_id() -> str:
    return secrets.token_hex(6)


def is_id(value: str) -> bool:
    return bool(_ID.fullmatch(value))


class ApprovalStore:
    def __init__(self, directory: str, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        ensure_dir(directory)

    def path(self, approval_id: str) -> str:
        if not is_id(approval_id):
            raise ValueError(f"not an approval id: {approval_id!r}")
        return os.path.join(self.directory, f"{approval_id}.json")

    def save(self, approval: Approval) -> None:
        body = json.dumps(asdict(approval), sort_keys=True).encode()
        write_atomic(self.path(approval.id), body, fsync=self.fsync)

    def get(self, approval_id: str) -> Approval | None:
        if not is_id(approval_id):
            return None
        try:
            with open(self.path(approval_id), encoding="utf-8") as handle:
                return Approval.from_json(json.load(handle))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable approval %s: %s", approval_id, exc)
            return None

    def all(self) -> list[Approval]:
        found = []
        for name in sorted(os.listdir(self.directory)):
            stem = name.removesuffix(".json")
            if name.endswith(".json") and is_id(stem):
                approval = self.get(stem)
                if approval is not None:
                    found.append(approval)
        return found

    def pending(self) -> list[Approval]:
        return [a for a in self.all() if a.state == PENDING]

    def prune(self, now: float) -> int:
        removed = 0
        for approval in self.all():
            decided = approval.decided_at or approval.expires_at
            if approval.state != PENDING and now - decided > KEEP_DECIDED_S:
                os.unlink(self.path(approval.id))
                removed += 1
        return removed

"""Standing approvals: "always allow exactly this call", written only by a human's answer, visible and removable.

A rule is as narrow as a rule can be: one AID with one inputs digest (the same digest a lease binds), so
"always" for ``ls data/`` never covers ``rm``, nor ``ls`` of another directory.  Rules live in
``$MACHINA_ROOT/state/agent/always.json`` (state/ is out of every tool's reach, so no tool, and so no model,
can add one), each with the inputs it covers, when and by whom it was added.  The operator reads and removes
them with ``machina chat``'s ``/always`` and ``/forget N``, or by editing the file; an unreadable file counts
as no rules at all.

A matching rule does not bypass the toolhost: the session still asks it for a lease bound to that one call,
and the toolhost still decides; the rule only answers the human's question in advance.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

from machina.clock import SYSTEM_CLOCK, Clock
from machina.fsutil import ensure_dir, write_atomic
from machina.toolhost.leases import inputs_digest, is_digest

log = logging.getLogger(__name__)
MAX_RULES = 500


@dataclass(frozen=True)
class AlwaysRule:
    aid: str
    inputs_digest: str
    inputs: dict[str, Any]
    added_at: float
    added_by: str


class AlwaysRules:
    def __init__(self, path: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()

    @classmethod
    def under(cls, state_dir: str, clock: Clock = SYSTEM_CLOCK) -> AlwaysRules:
        return cls(os.path.join(state_dir, "agent", "always.json"), clock)

    def rules(self) -> list[AlwaysRule]:
        """The rules in the file now (read each time, so a removal by hand takes effect at once)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                doc = json.load(handle)
            rules = [AlwaysRule(**item) for item in doc["rules"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("%s is unreadable (%s): no standing approval applies", self.path, exc)
            return []
        return [r for r in rules if isinstance(r.aid, str) and is_digest(r.inputs_digest)]

    def covers(self, aid: str, inputs: dict[str, Any]) -> AlwaysRule | None:
        try:
            wanted = inputs_digest(aid, inputs)
        except (TypeError, ValueError):
            return None
        return next((r for r in self.rules() if r.aid == aid and r.inputs_digest == wanted), None)

    def add(self, aid: str, inputs: dict[str, Any], added_by: str) -> AlwaysRule:
        rule = AlwaysRule(aid, inputs_digest(aid, inputs), dict(inputs), round(self.clock.time(), 3), added_by)
        with self._lock:
            rules = [r for r in self.rules() if (r.aid, r.inputs_digest) != (rule.aid, rule.inputs_digest)]
            self._save([*rules, rule][-MAX_RULES:])
        log.warning("standing approval added for %s (inputs digest %s) by %s", aid, rule.inputs_digest[:12], added_by)
        return rule

    def remove(self, index: int) -> AlwaysRule | None:
        """Remove the rule at ``index`` (as :meth:`rules` lists them, from 0); None when there is none."""
        with self._lock:
            rules = self.rules()
            if not 0 <= index < len(rules):
                return None
            gone = rules.pop(index)
            self._save(rules)
        log.warning("standing approval removed for %s (inputs digest %s)", gone.aid, gone.inputs_digest[:12])
        return gone

    def _save(self, rules: list[AlwaysRule]) -> None:
        ensure_dir(os.path.dirname(self.path))
        body = {"version": 1, "rules": [asdict(r) for r in rules]}
        write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode(), fsync=True)

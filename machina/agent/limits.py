"""The numbers that bound one turn of a session, read from the configuration.

There are no per-phase timeouts (AGENT.md section 2: the earlier system's 25 s phase limits killed slow
models mid-answer under their own 60-180 s HTTP timeouts).  A turn has one budget, ``MACHINA_PULSE_BUDGET_S``;
every model call is given the turn's end as its deadline, and the backend makes its own limit the smaller
of ``MACHINA_CHAT_TIMEOUT_MS`` and what is left, so no driver deadline is ever shorter than the HTTP one.
Tool calls are bounded by the toolhost (each tool's own limit, ``MACHINA_TOOLHOST_TIMEOUT`` on the socket).
"""

from __future__ import annotations

from dataclasses import dataclass

from machina.config import Config

REPEAT_LIMIT = 3  # the same call (AID and inputs) this many times in a turn ends it
ERROR_LIMIT = 5  # this many failed or refused calls in a row end it
CALLS_PER_CYCLE = 12  # of the calls one model answer asks for, at most this many run (AGENT.md: 12 steps)
LEASE_TTL_MS = 60_000  # a "yes" becomes a lease spent at once; it need not live longer
TOOL_RESULT_CHARS = 8000  # of one tool result, what the model reads
KEEP_TURNS = 8  # whole turns kept in the history; older ones are folded into a digest
HISTORY_CHARS = 60_000  # or fewer, when the kept turns are longer than this


@dataclass(frozen=True)
class Limits:
    max_cycles: int
    budget_s: float
    permission_timeout_s: float
    repeat_limit: int = REPEAT_LIMIT
    error_limit: int = ERROR_LIMIT
    calls_per_cycle: int = CALLS_PER_CYCLE
    lease_ttl_ms: int = LEASE_TTL_MS
    tool_result_chars: int = TOOL_RESULT_CHARS
    keep_turns: int = KEEP_TURNS
    history_chars: int = HISTORY_CHARS

    @classmethod
    def from_config(cls, cfg: Config) -> Limits:
        return cls(
            max_cycles=int(cfg["MACHINA_MAX_CYCLES"]),
            budget_s=float(cfg["MACHINA_PULSE_BUDGET_S"]),
            permission_timeout_s=float(cfg["MACHINA_PERMISSION_TIMEOUT_S"]),
        )

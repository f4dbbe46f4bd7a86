"""Burst mode: after a long idle spell the engine works harder for a bounded time (AGENT.md section 5).

A burst starts once the user has been idle ``burst_after_idle_s`` (2 h; 3 min with DEV explore) and ends on
the first of: ``burst_max_s`` elapsed (30 min; 1 h with DEV explore), user activity (idle under 30 s, as the
chat and Telegram front ends report it), or 5 stalled turns in a row;
the next burst needs a new idle spell after that.  Each heartbeat of a burst is one turn:
it runs the single highest-priority level that is due at burst pace (its interval divided by
``BURST_SPEEDUP``), else a self-question while fewer than ``MAX_SELF_QUESTIONS`` were asked in this burst.
A turn that did nothing counts as stalled.
"""

from __future__ import annotations

from machina.autonomic.timings import Timings

#: Test 5 > Heal 4 > Web 3 > Curiosity 2 > Reflect 1 (> SelfQuestion 0, asked only when no level is due).
PRIORITY = ("L2", "L3", "L6", "L5", "L1")
SELF_QUESTION = "SQ"
USER_ACTIVE_S = 30.0
MAX_STALLED_TURNS = 5
MAX_SELF_QUESTIONS = 3
BURST_SPEEDUP = 4.0

EXIT_TIME = "time"
EXIT_USER = "user activity"
EXIT_STALLED = "stalled"


def should_enter(active: bool, idle_s: float, timings: Timings) -> bool:
    return not active and idle_s >= timings.burst_after_idle_s


def exit_reason(started_at: float, now: float, idle_s: float, stalled: int, timings: Timings) -> str | None:
    """Why a running burst must end now, or None."""
    if now - started_at >= timings.burst_max_s:
        return EXIT_TIME
    if idle_s < USER_ACTIVE_S:
        return EXIT_USER
    if stalled >= MAX_STALLED_TURNS:
        return EXIT_STALLED
    return None


def pick(due_at_burst_pace: list[str], self_questions_asked: int, can_self_question: bool) -> str | None:
    """The one thing a burst turn runs: the highest-priority due level, else a self-question, else None."""
    for level in PRIORITY:
        if level in due_at_burst_pace:
            return level
    if can_self_question and self_questions_asked < MAX_SELF_QUESTIONS:
        return SELF_QUESTION
    return None

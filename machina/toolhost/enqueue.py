"""AID.QUEUE.ENQUEUE.v1 on the toolhost's side: narrow the new job's capabilities, then enqueue it.

A job may only start jobs that can do at most what it can: the new job's ``_capabilities`` become the
intersection of what it asks for and what the calling job has (passed by the caller in the request's
``capabilities`` field; a caller that passes none, such as an operator's ``machina tool run``, is not
limited).  ``allowed_tools`` keeps each pattern of one side that the other side covers; ``blocked_tools``
is the union of both.  Absent ``allowed_tools`` means every tool.

A job started by a tool never carries leases (``_leases``): approvals come from an operator
(``machina queue approve``), never from what a job or a model wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from machina.approvals import LEASES_KEY
from machina.exitcodes import MachinaError
from machina.toolhost.broker import CallContext
from machina.toolhost.permissions import pattern_matches
from machina.tools.base import ToolFailure


def covered(pattern: str, by: Iterable[str]) -> bool:
    """Whether every AID ``pattern`` matches is matched by one of ``by``."""
    for other in by:
        if other == "*" or other == pattern:
            return True
        if other.endswith("*") and pattern != "*":
            if pattern.endswith("*"):
                if pattern[:-1].startswith(other[:-1]):
                    return True
            elif pattern_matches(other, pattern):
                return True
    return False


def narrow(caller: dict[str, Any] | None, requested: dict[str, Any] | None) -> dict[str, Any] | None:
    """The capabilities of a job started by a job holding ``caller``."""
    if caller is None:
        return requested
    requested = requested or {}
    result: dict[str, Any] = {}
    mine, theirs = caller.get("allowed_tools"), requested.get("allowed_tools")
    if mine is None:
        allowed = theirs
    elif theirs is None:
        allowed = list(mine)
    else:
        allowed = [p for p in theirs if covered(p, mine)]
        allowed += [p for p in mine if covered(p, theirs) and p not in allowed]
    if allowed is not None:
        result["allowed_tools"] = allowed
    blocked = list(dict.fromkeys([*caller.get("blocked_tools", []), *requested.get("blocked_tools", [])]))
    if blocked:
        result["blocked_tools"] = blocked
    return result


class Enqueuer:
    """Enqueue through the suite's queue (machina.queue), after narrowing."""

    def __init__(self, open_queue: Callable[[], Any]) -> None:
        self._open_queue = open_queue
        self._queue: Any = None

    def __call__(self, request: dict[str, Any], context: CallContext) -> dict[str, Any]:
        if LEASES_KEY in request:
            raise ToolFailure(
                f"not enqueued: a job started by a tool cannot carry {LEASES_KEY} (only an operator approves)"
            )
        job = dict(request)
        caps = narrow(context.capabilities, request.get("_capabilities"))
        if caps is None:
            job.pop("_capabilities", None)
        else:
            job["_capabilities"] = caps
        try:
            if self._queue is None:
                self._queue = self._open_queue()
            result = self._queue.enqueue(job)
        except MachinaError as exc:
            raise ToolFailure(f"not enqueued: {exc}") from None
        reply: dict[str, Any] = dict(result.as_response())
        reply.pop("ok", None)
        reply["capabilities"] = caps
        return reply

"""AID.QUEUE.ENQUEUE.v1: enqueue a follow-up job.

The toolhost writes the job (the sandbox cannot reach the queue) and narrows its ``_capabilities`` to those
of the job that made the call, so a job can never start a job that may do more than itself.
"""

from __future__ import annotations

from typing import Any

from machina.tools.base import ToolContext


def queue_enqueue(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    result, _ = ctx.host("enqueue", request=inputs["request"])
    return result

"""Each handled request leaves one typed record in ``memory/experiences.jsonl`` (AGENT.md section 6).

Distillation (:mod:`machina.agent.distill`) and the autonomic engine read them.  A request that looks like
it carries a secret is recorded without its words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from machina.agent.routes import SECRETISH
from machina.clock import Clock
from machina.memory.streams import StreamError, append

log = logging.getLogger(__name__)
REQUEST_CHARS = 500
PREVIEW_CHARS = 300
WITHHELD = "[withheld: the request looked like it carried a secret]"


@dataclass(frozen=True)
class Experience:
    user_request: str
    intent_type: str  # fast_path | distilled | model | fallback
    tool_used: str | None
    success: bool
    elapsed_sec: float
    result_preview: str

    def record(self) -> dict[str, object]:
        request = WITHHELD if SECRETISH.search(self.user_request) else self.user_request[:REQUEST_CHARS]
        return {
            "user_request": request,
            "intent_type": self.intent_type,
            "tool_used": self.tool_used,
            "success": self.success,
            "elapsed_sec": round(max(0.0, self.elapsed_sec), 3),
            "result_preview": self.result_preview[:PREVIEW_CHARS],
            "source": "chat",
        }


def record(memory_dir: str | None, experience: Experience, clock: Clock, request_id: str) -> None:
    """Append it; a memory directory that cannot be written is logged, never fatal to the conversation."""
    if memory_dir is None:
        return
    try:
        append(memory_dir, "experiences", experience.record(), request_id=request_id, clock=clock)
    except (OSError, StreamError) as exc:
        log.warning("could not record the experience in %s: %s", memory_dir, exc)

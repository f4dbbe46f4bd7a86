"""One conversation turn through the shared agent core (machina.agent: the Pulse loop, fast path, fallback).

:class:`machina.agent.Session` is synchronous: each step of its event generator runs in a worker thread,
and the events are turned into chat output here.  Every tool call goes through the toolhost; a call that
needs a human (:class:`~machina.agent.events.ApprovalNeeded`) is put to the chat as buttons
(:meth:`TurnEvents.approve`) and only a timely "allow" answers it yes; the session then issues a lease for
exactly that call.  ``/stop`` cancels the session (:meth:`ChatSession.stop`), which ends the turn at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.agent import Limits, Session, distill_rules, recent_experiences
from machina.agent import events as ev
from machina.config import Config, ConfigError
from machina.llm import Backend, open_backend
from machina.toolhost.client import ToolhostClient

log = logging.getLogger(__name__)


class TurnEvents(Protocol):
    async def progress(self, line: str) -> None: ...

    async def approve(self, aid: str, tier: int, inputs: dict[str, Any]) -> bool:
        """True once a human allowed this exact call in time."""

    async def answer(self, text: str) -> None: ...


@dataclass
class ChatSession:
    """What the bot keeps per chat: the agent session, and the backend and model ``/use`` chose."""

    chat_id: int
    backend: str | None = None
    model: str | None = None
    auto_route: bool = False
    answered: bool = False  # the running turn has sent its answer (only its bookkeeping is left)
    agent: Session | None = None
    task: asyncio.Task[None] | None = None
    model_backend: Backend | None = field(default=None, repr=False)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.cancel()

    def history_size(self) -> int:
        return len(self.agent.history.messages) if self.agent is not None else 0

    def forget(self) -> None:
        if self.agent is not None:
            self.agent.clear()

    def close(self) -> None:
        if self.model_backend is not None:
            self.model_backend.close()
            self.model_backend = None


class TurnRunner:
    def __init__(self, cfg: Config, toolhost: ToolhostClient, memory_dir: str) -> None:
        self.cfg = cfg
        self.toolhost = toolhost
        self.memory_dir = memory_dir

    def backend_for(self, chat: ChatSession) -> Backend:
        """The chat's backend (ConfigError when its model is not configured)."""
        return open_backend(self.cfg, backend=chat.backend, model=chat.model)

    def switch(self, chat: ChatSession, backend: str | None = None, model: str | None = None) -> None:
        """``/use``: the next turn builds a session on the new backend or model (the history is kept)."""
        if backend is not None:
            chat.backend, chat.model = backend, None
        if model is not None:
            chat.model = model
        if chat.agent is not None:
            history = chat.agent.history
            chat.close()
            chat.agent = None
            self.agent_for(chat).history = history

    def agent_for(self, chat: ChatSession) -> Session:
        if chat.agent is None:
            try:
                chat.model_backend = self.backend_for(chat)
                reason = ""
            except ConfigError as exc:
                chat.model_backend, reason = None, str(exc)
            chat.agent = Session(
                chat.model_backend,
                self.toolhost,
                Limits.from_config(self.cfg),
                memory_dir=self.memory_dir,
                rules=distill_rules(recent_experiences(self.memory_dir)),
                stream=False,
                no_model_reason=reason or "no model is configured",
            )
        return chat.agent

    async def run(self, chat: ChatSession, text: str, events: TurnEvents) -> ev.Done | None:
        """Run one turn, reporting as it goes; its Done event (None if the session ended without one)."""
        agent = self.agent_for(chat)
        steps = agent.send(text)
        while True:
            event = await asyncio.to_thread(_next, steps)
            if event is None:
                return None
            if isinstance(event, ev.ApprovalNeeded):
                request = event.request
                allowed = await events.approve(request.aid, request.tier, dict(request.inputs))
                request.allow_once() if allowed else request.deny()
            elif isinstance(event, ev.Done):
                return event
            else:
                await _report(event, events)


def _next(steps: Iterator[ev.Event]) -> ev.Event | None:
    return next(steps, None)


async def _report(event: ev.Event, events: TurnEvents) -> None:
    if isinstance(event, ev.ToolStarted):
        await events.progress(f"🔧 {event.aid} …")
    elif isinstance(event, ev.ToolResult):
        mark = "✅" if event.ok else "⚠️"
        await events.progress(f"{mark} {event.aid}: {event.status} ({event.duration_ms:.0f} ms)")
    elif isinstance(event, ev.ApprovalDecided):
        await events.progress(f"🔐 {event.aid}: {event.decision}")
    elif isinstance(event, ev.Error):
        await events.progress(f"⚠️ {event.message}")
    elif isinstance(event, ev.Reply):
        await events.answer(event.text)

"""One conversation turn through the shared agent core (machina.agent: the Pulse loop, fast path, fallback).

:class:`machina.agent.Session` is synchronous: each step of its event generator runs in a worker thread,
and the events are turned into chat output here.  Every tool call goes through the toolhost; a call that
needs a human (:class:`~machina.agent.events.ApprovalNeeded`) is put to the chat as buttons
(:meth:`TurnEvents.approve`) and only a timely "allow" answers it yes; the session then issues a lease for
exactly that call.  ``/stop`` cancels the session (:meth:`ChatSession.stop`), which ends the turn at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from machina.agent import Limits, Session, distill_rules, recent_experiences
from machina.agent import events as ev
from machina.agent.always import AlwaysRules
from machina.config import Config, ConfigError
from machina.llm import Backend, open_backend
from machina.telegram.pending import ALLOWED, ALWAYS
from machina.telegram.routing import is_complex
from machina.toolhost.client import ToolhostClient

log = logging.getLogger(__name__)
#: Characters of a tool result shown in the chat's progress message as it arrives.
PREVIEW_SHOWN = 300


class TurnEvents(Protocol):
    async def progress(self, line: str) -> None: ...

    async def approve(self, aid: str, tier: int, inputs: dict[str, Any]) -> str:
        """The human's answer to this exact call: ``allowed`` (once), ``always`` or ``denied``."""

    async def answer(self, text: str) -> None: ...


MAIN, ROUTED = "main", "routed"


@dataclass
class ChatSession:
    """What the bot keeps per chat: its agent sessions (the chat's backend, and the auto-route backend),
    which share one history, and the backend and model ``/use`` chose."""

    chat_id: int
    backend: str | None = None
    model: str | None = None
    auto_route: bool = False
    answered: bool = False  # the running turn has sent its answer (only its bookkeeping is left)
    agents: dict[str, Session] = field(default_factory=dict)
    running: Session | None = None
    task: asyncio.Task[None] | None = None
    backends: list[Backend] = field(default_factory=list, repr=False)

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def stop(self) -> None:
        if self.running is not None:
            self.running.cancel()

    def history_size(self) -> int:
        agent = next(iter(self.agents.values()), None)
        return len(agent.history.messages) if agent is not None else 0

    def forget(self) -> None:
        for agent in self.agents.values():
            agent.clear()

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends.clear()
        self.agents.clear()


class TurnRunner:
    def __init__(self, cfg: Config, toolhost: ToolhostClient, memory_dir: str, always: AlwaysRules) -> None:
        self.cfg = cfg
        self.toolhost = toolhost
        self.memory_dir = memory_dir
        self.always = always

    def backend_for(self, chat: ChatSession) -> Backend:
        """The chat's backend (ConfigError when its model is not configured)."""
        return open_backend(self.cfg, backend=chat.backend, model=chat.model)

    def routed_backend(self) -> Backend:
        """The second backend of auto-routing (ConfigError when it is not configured)."""
        name = self.cfg["MACHINA_AUTO_ROUTE_BACKEND"]
        if not name:
            raise ConfigError("MACHINA_AUTO_ROUTE_BACKEND is not set: there is no second backend to route to")
        return open_backend(self.cfg, backend=name, model=self.cfg["MACHINA_AUTO_ROUTE_MODEL"])

    def switch(self, chat: ChatSession, backend: str | None = None, model: str | None = None) -> None:
        """``/use``: the next turn builds a session on the new backend or model (the history is kept)."""
        if backend is not None:
            chat.backend, chat.model = backend, None
        if model is not None:
            chat.model = model
        history = next(iter(chat.agents.values())).history if chat.agents else None
        chat.close()
        if history is not None:
            self.agent_for(chat, MAIN).history = history

    def agent_for(self, chat: ChatSession, which: str) -> Session:
        agent = chat.agents.get(which)
        if agent is not None:
            return agent
        try:
            backend: Backend | None = self.backend_for(chat) if which == MAIN else self.routed_backend()
            reason = ""
        except ConfigError as exc:
            backend, reason = None, str(exc)
        if backend is not None:
            chat.backends.append(backend)
        agent = Session(
            backend,
            self.toolhost,
            Limits.from_config(self.cfg),
            memory_dir=self.memory_dir,
            rules=distill_rules(recent_experiences(self.memory_dir)),
            stream=False,
            no_model_reason=reason or "no model is configured",
            always=self.always,
            approver=f"a Telegram user in chat {chat.chat_id}",
        )
        if chat.agents:  # one conversation, whichever backend answers a turn
            agent.history = next(iter(chat.agents.values())).history
        chat.agents[which] = agent
        return agent

    async def run(self, chat: ChatSession, text: str, events: TurnEvents) -> ev.Done | None:
        """Run one turn, reporting as it goes; its Done event (None if the session ended without one)."""
        which = ROUTED if chat.auto_route and is_complex(text) else MAIN
        agent = chat.running = self.agent_for(chat, which)
        if which == ROUTED:
            await events.progress("↪ a complex request: routed to the second backend")
        steps = agent.send(text)
        try:
            while True:
                event = await asyncio.to_thread(_next, steps)
                if event is None:
                    return None
                if isinstance(event, ev.ApprovalNeeded):
                    request = event.request
                    answer = await events.approve(request.aid, request.tier, dict(request.inputs))
                    if answer == ALWAYS:
                        request.allow_always()  # the session writes the standing approval
                    elif answer == ALLOWED:
                        request.allow_once()
                    else:
                        request.deny()
                elif isinstance(event, ev.ConfigProposed):
                    # Declined here: in a chat, backend and model change only by an administrator's /use.
                    event.proposal.decline()
                    await events.progress(f"⚙️ the model proposed {event.proposal.changes}: not applied (see /use)")
                elif isinstance(event, ev.Done):
                    return event
                else:
                    await _report(event, events)
        finally:
            # Done is the last event, but the session frees itself for the next turn only when its
            # generator finishes: close it now rather than whenever it is collected.
            with contextlib.suppress(ValueError):  # still executing in a worker thread (a cancelled task)
                steps.close()  # type: ignore[attr-defined]


def _next(steps: Iterator[ev.Event]) -> ev.Event | None:
    return next(steps, None)


async def _report(event: ev.Event, events: TurnEvents) -> None:
    if isinstance(event, ev.ToolStarted):
        await events.progress(f"🔧 {event.aid} …")
    elif isinstance(event, ev.ToolResult):
        mark = "✅" if event.ok else "⚠️"
        shown = event.preview[:PREVIEW_SHOWN] + ("…" if len(event.preview) > PREVIEW_SHOWN else "")
        line = f"{mark} {event.aid}: {event.status} ({event.duration_ms:.0f} ms)"
        await events.progress(f"{line}\n   {shown}" if shown else line)
    elif isinstance(event, ev.ApprovalDecided):
        await events.progress(f"🔐 {event.aid}: {event.decision}")
    elif isinstance(event, ev.Error):
        await events.progress(f"⚠️ {event.message}")
    elif isinstance(event, ev.Reply):
        await events.answer(event.text)

"""The bot: python-telegram-bot's Application with the gate, the commands, the conversation and the buttons.

Handlers stay short: a chat message starts a turn as a background task (so ``/stop`` and button presses are
handled while it runs), one turn per chat at a time.
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import time
from collections import defaultdict
from typing import Any

from telegram import BotCommand, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from machina.agent import events as ev
from machina.agent.always import AlwaysRules
from machina.autonomic import activity
from machina.config import Config
from machina.ipc.jsonlines import ServiceUnavailable
from machina.llm import LLMError
from machina.llm.backend import BACKENDS
from machina.mcp.status import status_text
from machina.memory.graph import graph_status
from machina.root import Root
from machina.telegram.approvals import CALLBACK_PREFIX, ApprovalDesk
from machina.telegram.commands import ADMIN_ONLY, COMMANDS
from machina.telegram.gate import Gate
from machina.telegram.outbox import ChatWriter, send_text
from machina.telegram.pending import ALLOWED, ALWAYS
from machina.telegram.settings import TelegramSettings
from machina.telegram.turns import ChatSession, TurnRunner
from machina.toolapi import APPROVAL_REQUIRED
from machina.toolhost.client import ToolhostClient, ToolhostError
from machina.toolhost.leases import inputs_digest

log = logging.getLogger(__name__)
#: Seconds of one getUpdates long poll.
POLL_TIMEOUT_S = 25
#: A 429 is waited out (its full retry_after) and retried this many times before the call fails.
RATE_LIMIT_RETRIES = 5
TYPING_EVERY_S = 4.0
GPU_SMOKE = "AID.GPU_SMOKE.v1"
WAITS_FOR_HUMAN = frozenset({"gpu"})


class MachinaBot:
    def __init__(
        self,
        cfg: Config,
        settings: TelegramSettings,
        root: Root,
        desk: ApprovalDesk,
        gate: Gate,
        always: AlwaysRules,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.root = root
        self.desk = desk
        self.gate = gate
        self.toolhost = ToolhostClient(root.socket_path("toolhost"), timeout=float(cfg["MACHINA_TOOLHOST_TIMEOUT"]))
        self.always = always
        self.runner = TurnRunner(cfg, self.toolhost, root.memory, always)
        self.sessions: dict[int, ChatSession] = {}
        self._commands: dict[str, Any] = {name: getattr(self, f"cmd_{name}") for name in COMMANDS}

    def build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        app = (
            ApplicationBuilder()
            .token(self.settings.token)
            .base_url(self.settings.api_url)
            .base_file_url(self.settings.api_url.removesuffix("/bot") + "/file/bot")
            .rate_limiter(AIORateLimiter(max_retries=RATE_LIMIT_RETRIES))
            .get_updates_read_timeout(POLL_TIMEOUT_S + 10)
            .build()
        )
        app.add_handler(TypeHandler(Update, self.gate.check), group=-1)
        for name, callback in self._commands.items():
            # /gpu may wait for a button press: it must not hold up the updates that carry the press.
            app.add_handler(CommandHandler(name, self._guarded(name, callback), block=name not in WAITS_FOR_HUMAN))
        app.add_handler(CallbackQueryHandler(self.desk.on_press, pattern=rf"^{CALLBACK_PREFIX}:"))
        app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self.on_edit))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_error_handler(self.on_error)
        return app

    async def register_commands(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        await app.bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS.items()])

    def session(self, chat_id: int) -> ChatSession:
        return self.sessions.setdefault(chat_id, ChatSession(chat_id))

    # --- the conversation --------------------------------------------------------------------------------

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        activity.touch(self.root.state)  # the autonomic engine yields to a person (idle time, burst exit)
        session = self.session(message.chat_id)
        previous = session.task if session.busy else None
        if previous is not None and not session.answered:
            await context.bot.send_message(message.chat_id, "⏳ Queued after the running turn (/stop cancels it).")
        session.task = context.application.create_task(self._turn(context, session, message.text, previous))

    async def _turn(
        self,
        context: ContextTypes.DEFAULT_TYPE,
        session: ChatSession,
        text: str,
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        """One turn; turns of a chat run one after the other (a message sent meanwhile waits its turn)."""
        if previous is not None:
            await asyncio.wait([previous])
        session.answered = False
        bot, chat_id = context.bot, session.chat_id
        writer = ChatWriter(bot, chat_id)
        typing = asyncio.create_task(self._typing(context, chat_id))
        events = _Events(writer, self.desk, bot, session)
        try:
            done = await self.runner.run(session, text, events)
            typing.cancel()
            await writer.flush()
            if done is not None and done.reason == ev.CANCELLED:
                await bot.send_message(chat_id, "⏹ Stopped.")
            elif done is not None and not done.answered:
                await writer.answer(f"The turn ended without an answer ({done.reason}). {done.detail}".strip())
        except Exception as exc:
            log.exception("turn in chat %s failed", chat_id)
            await bot.send_message(chat_id, f"The turn failed: {type(exc).__name__}: {exc}")
        finally:
            typing.cancel()

    async def _typing(self, context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
        """The typing indicator, renewed while the turn runs (Telegram shows it for about 5 s)."""
        while True:
            try:
                await context.bot.send_chat_action(chat_id, ChatAction.TYPING)
            except TelegramError as exc:  # only a hint: never let it end or fail the turn
                log.debug("typing indicator not sent: %s", exc)
            await asyncio.sleep(TYPING_EVERY_S)

    async def on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await context.bot.send_message(message.chat_id, "Edited messages are not run again: send a new one.")

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("handling an update failed: %s: %s", type(context.error).__name__, context.error)

    # --- commands --------------------------------------------------------------------------------------

    def _guarded(self, name: str, callback: Any) -> Any:
        async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            user = update.effective_user
            chat = update.effective_chat
            if chat is None:
                return
            activity.touch(self.root.state)
            if name in ADMIN_ONLY and (user is None or user.id not in self.settings.admin_ids):
                log.warning("/%s refused to user %s: not in TELEGRAM_ADMIN_USER_IDS", name, user.id if user else None)
                await send_text(context.bot, chat.id, f"/{name} changes the system: only administrators may use it.")
                return
            reply = await callback(chat.id, list(context.args or []), context)
            if reply:
                await send_text(context.bot, chat.id, reply)

        return handler

    async def cmd_start(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        tools = await self._tools_or_none()
        lines = [
            "Machina: an operations assistant. Write what you need; I use tools through the sandboxed toolhost "
            "and ask here before anything risky runs.",
            f"Backend: {session.backend or self.cfg['MACHINA_CHAT_BACKEND']}, model: {self._model(session)}",
            f"Profile: {self.cfg['MACHINA_PROFILE']}; tools: {_count(tools)}; goals: {self._goal_count()}",
            "",
            *(f"/{name} — {text}" for name, text in COMMANDS.items()),
        ]
        return "\n".join(lines)

    async def cmd_clear(self, chat_id: int, args: list[str], context: Any) -> str:
        self.session(chat_id).forget()
        return "Conversation forgotten."

    async def cmd_status(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        tools = await self._tools_or_none()
        autonomic = self._autonomic_state()
        return "\n".join(
            [
                f"Backend: {session.backend or self.cfg['MACHINA_CHAT_BACKEND']}, model: {self._model(session)}",
                f"Profile: {self.cfg['MACHINA_PROFILE']}",
                f"Autonomic: {'heartbeats ' + str(autonomic.get('heartbeats')) if autonomic else 'no state'}",
                f"History: {session.history_size()} messages; turn running: {'yes' if session.busy else 'no'}",
                f"Tools: {_count(tools)}; goals: {self._goal_count()}",
                f"Pending approvals: {len(self.desk.store.pending())}",
                f"Dropped updates from strangers: {self.gate.total_dropped()}",
                f"Root: {self.root.path}",
            ]
        )

    async def cmd_gpu(self, chat_id: int, args: list[str], context: Any) -> str:
        reply = await asyncio.to_thread(self.toolhost.call, GPU_SMOKE, {})
        if reply.status == APPROVAL_REQUIRED:  # tier 2: the mode may ask, like any other call
            standing = self.always.covers(GPU_SMOKE, {}) is not None
            answer = ALLOWED if standing else await self.desk.ask(context.bot, chat_id, GPU_SMOKE, 2, {})
            if answer not in (ALLOWED, ALWAYS):
                return "GPU smoke test: not approved."
            if answer == ALWAYS:
                self.always.add(GPU_SMOKE, {}, added_by=f"a Telegram user in chat {chat_id}")
            token = await self.desk.lease(GPU_SMOKE, 2, inputs_digest(GPU_SMOKE, {}))
            reply = await asyncio.to_thread(self.toolhost.call, GPU_SMOKE, {}, lease_token=token)
        if not reply.ok:
            return f"GPU smoke test: {reply.status}: {reply.error}"
        return "GPU smoke test: " + json.dumps(reply.output, ensure_ascii=False)[:3000]

    async def cmd_models(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        try:
            backend = self.runner.backend_for(session)
        except Exception as exc:
            return f"No backend: {exc}"
        try:
            models = await asyncio.to_thread(backend.list_models)
        except LLMError as exc:
            return f"{backend.name} at {backend.base_url} did not list its models: {exc}"
        finally:
            backend.close()
        listed = "\n".join(f"{n}. {m}{' (in use)' if m == backend.model else ''}" for n, m in enumerate(models, 1))
        return f"{backend.name} models:\n{listed or '(none)'}\nSwitch with /use <n or name>."

    async def cmd_use(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        if not args:
            return f"Usage: /use <backend: {', '.join(BACKENDS)}> or /use <model number or name>"
        wanted = args[0]
        if wanted in BACKENDS:
            self.runner.switch(session, backend=wanted)
            return f"This chat now uses the {wanted} backend."
        if wanted.isdigit():
            backend = self.runner.backend_for(session)
            try:
                models = await asyncio.to_thread(backend.list_models)
            finally:
                backend.close()
            index = int(wanted) - 1
            if not 0 <= index < len(models):
                return f"No model number {wanted}: /models lists {len(models)}."
            wanted = models[index]
        self.runner.switch(session, model=wanted)
        return f"This chat now uses the model {wanted}."

    async def cmd_auto_status(self, chat_id: int, args: list[str], context: Any) -> str:
        state = self._autonomic_state()
        if not state:
            return "machina-autonomic has written no state yet (is it running?)."
        now = time.time()
        idle = now - activity.last_activity(self.root.state)
        lines = [
            f"Heartbeats: {state.get('heartbeats', 0)}; user idle: {_ago(idle)}",
            f"Burst: {'active' if state.get('burst_active') else 'idle'}; bursts so far: {state.get('bursts', 0)}",
        ]
        for name, rec in sorted((state.get("levels") or {}).items()):
            last = rec.get("last_run") or 0
            when = _ago(now - last) + " ago" if last else "never"
            lines.append(f"{name}: {rec.get('runs', 0)} runs, last {when} ({rec.get('last_outcome') or '-'})")
        lines.append(f"Curiosity today: {state.get('curiosity_today', 0)}; alerts: {state.get('alerts', 0)}")
        return "\n".join(lines)

    async def cmd_auto_route(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        choice = (args[0] if args else "status").lower()
        second = self.cfg["MACHINA_AUTO_ROUTE_BACKEND"]
        if choice not in ("on", "off", "status"):
            return "Usage: /auto_route on | off | status"
        if choice == "on" and not second:
            return "No second backend is configured (MACHINA_AUTO_ROUTE_BACKEND): auto-routing stays off."
        if choice != "status":
            session.auto_route = choice == "on"
        target = f"{second} ({self.cfg['MACHINA_AUTO_ROUTE_MODEL'] or 'its configured model'})" if second else "none"
        return (
            f"Auto-routing is {'on' if session.auto_route else 'off'} for this chat; second backend: {target}. "
            "Complex requests (long, several steps, or code) go there; the rest to the chat's backend."
        )

    async def cmd_stop(self, chat_id: int, args: list[str], context: Any) -> str:
        session = self.session(chat_id)
        if not session.busy or session.task is None:
            return "Nothing is running."
        session.stop()
        await self.desk.cancel_waiting(context.bot, chat_id)
        return ""  # the turn itself says "Stopped." as it ends

    async def cmd_mcp_status(self, chat_id: int, args: list[str], context: Any) -> str:
        try:
            return status_text(await asyncio.to_thread(self.toolhost.mcp_status)) or "No MCP servers are configured."
        except (ServiceUnavailable, ToolhostError) as exc:
            return f"machina-toolhost did not answer: {exc}"

    async def cmd_mcp_reload(self, chat_id: int, args: list[str], context: Any) -> str:
        try:
            await asyncio.to_thread(self.toolhost.mcp_reload)
        except (ServiceUnavailable, ToolhostError) as exc:
            return f"Not reloaded: {exc}"
        return (
            "MCP servers reloaded from the operator's mcp_servers.json; changed tool definitions stay off until pinned."
        )

    async def _mcp_config(self, chat_id: int, args: list[str], context: Any) -> str:
        # A chat message never adds, starts or re-enables a server (AGENT.md: the earlier bot launched an MCP
        # command from a chat message); the operator's file and `machina mcp pin` on the host are the only ways.
        return (
            "MCP servers are changed only by the operator: edit MACHINA_MCP_CONFIG (mcp_servers.json) on the host, "
            "then /mcp_reload; new or changed tool definitions need `machina mcp pin SERVER` there."
        )

    cmd_mcp_enable = cmd_mcp_disable = cmd_mcp_add = cmd_mcp_remove = _mcp_config

    async def cmd_dev_mode(self, chat_id: int, args: list[str], context: Any) -> str:
        return "Switching machina-autonomic's timings from a chat is not part of this build: set MACHINA_DEV_EXPLORE."

    async def cmd_tools(self, chat_id: int, args: list[str], context: Any) -> str:
        tools = await self._tools_or_none()
        if tools is None:
            return "machina-toolhost is not reachable."
        groups: defaultdict[str, list[str]] = defaultdict(list)
        for tool in tools:
            group = tool["aid"].split(".")[1] if tool["aid"].count(".") >= 2 else "OTHER"
            groups[group].append(f"{tool['aid']} (tier {tool.get('tier', 0)}, {tool.get('permission', '?')})")
        return "\n".join(f"{g}:\n  " + "\n  ".join(sorted(items)) for g, items in sorted(groups.items()))

    async def cmd_graph_status(self, chat_id: int, args: list[str], context: Any) -> str:
        result = await asyncio.to_thread(graph_status, self.root.memory, " ".join(args) or None)
        return json.dumps(result, ensure_ascii=False, indent=1)

    # --- helpers ---------------------------------------------------------------------------------------

    def _model(self, session: ChatSession) -> str:
        if session.model:
            return session.model
        variable = {"oai_compat": "OAI_COMPAT_MODEL", "anthropic": "ANTHROPIC_MODEL", "ollama": "OLLAMA_MODEL"}
        return str(self.cfg[variable[session.backend or self.cfg["MACHINA_CHAT_BACKEND"]]] or "(not set)")

    async def _tools_or_none(self) -> list[dict[str, Any]] | None:
        try:
            return await asyncio.to_thread(self.toolhost.list_tools)
        except Exception as exc:
            log.info("toolhost not reachable: %s", exc)
            return None

    def _goal_count(self) -> int:
        count = 0
        for path in glob.glob(os.path.join(self.root.goalpacks, "*", "manifest.json")):
            try:
                with open(path, encoding="utf-8") as handle:
                    count += len(json.load(handle).get("goals", []))
            except (OSError, ValueError, AttributeError):
                continue
        return count

    def _autonomic_state(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.root.state, "autonomic_state.json"), encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}


class _Events:
    def __init__(self, writer: ChatWriter, desk: ApprovalDesk, bot: Any, session: ChatSession) -> None:
        self.writer, self.desk, self.bot, self.session = writer, desk, bot, session
        self.chat_id = session.chat_id

    async def progress(self, line: str) -> None:
        await self.writer.progress(line)

    async def approve(self, aid: str, tier: int, inputs: dict[str, Any]) -> str:
        await self.writer.flush()
        return await self.desk.ask(self.bot, self.chat_id, aid, tier, inputs)

    async def answer(self, text: str) -> None:
        await self.writer.answer(text)
        self.session.answered = True


def _ago(seconds: float) -> str:
    if seconds >= 86400 * 365:
        return "never"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{max(seconds, 0):.0f} s"


def _count(tools: list[dict[str, Any]] | None) -> str:
    return "toolhost not reachable" if tools is None else str(len(tools))

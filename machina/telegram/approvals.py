"""Approvals by inline buttons: "Allow once", "Deny", "Always".

When a tool call needs a human (the toolhost answered ``approval_required``), :meth:`ApprovalDesk.ask` posts
the call, its tier and its full inputs (as a file when long) to the chat that asked, and waits for a press
until MACHINA_PERMISSION_TIMEOUT_S; no answer is no.  A press counts only from the chat that asked (the gate
has already dropped other chats and users).  "Allow once" answers the turn's question yes, and the agent
session then issues a toolhost lease bound to exactly that call (its AID and inputs digest); "Always" also
makes it a standing approval of that exact call (machina.agent.always, shared with ``machina chat``, which
lists and removes them), so the same call is answered yes from then on; "Deny" denies.  Approvals are on
disk (:mod:`machina.telegram.pending`): after a restart the bot expires the overdue ones and still takes
presses on the others, running an approved call once and posting its result, since the turn that asked is
gone.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes, JobQueue

from machina.agent.always import AlwaysRules
from machina.clock import SYSTEM_CLOCK, Clock
from machina.telegram.pending import ALLOWED, ALWAYS, DENIED, EXPIRED, PENDING, Approval, ApprovalStore
from machina.telegram.pending import new_id as new_approval_id
from machina.toolapi import ToolReply
from machina.toolhost.leases import inputs_digest

log = logging.getLogger(__name__)

CALLBACK_PREFIX = "ap"
CHOICES = {"o": ALLOWED, "d": DENIED, "a": ALWAYS}
#: Inputs longer than this (as indented JSON) are sent as a file beside the approval message.
INLINE_INPUTS_MAX = 3000
LEASE_TTL_MS = 10 * 60 * 1000
_SHOWN = {ALLOWED: "✅ allowed once", ALWAYS: "✅ allowed, and always for this exact call", DENIED: "❌ denied"}


class Toolhost(Protocol):
    """What the desk needs from the toolhost (machina.toolhost.client.ToolhostClient, called in a thread)."""

    def issue_lease(self, aid: str, tier: int, ttl_ms: int, *, inputs_digest: str | None = None) -> dict[str, Any]: ...

    def call(self, aid: str, inputs: dict[str, Any], *, lease_token: str | None = None) -> ToolReply: ...


def callback_data(approval_id: str, choice: str) -> str:
    return f"{CALLBACK_PREFIX}:{approval_id}:{choice}"  # 17 bytes: well inside Telegram's 64


class ApprovalDesk:
    def __init__(
        self,
        store: ApprovalStore,
        rules: AlwaysRules,
        toolhost: Callable[[], Toolhost],
        timeout_s: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.rules = rules
        self.toolhost = toolhost
        self.timeout_s = timeout_s
        self.clock = clock
        self._waiters: dict[str, asyncio.Future[str]] = {}

    # --- a turn asks -------------------------------------------------------------------------------------

    async def ask(self, bot: Bot, chat_id: int, aid: str, tier: int, inputs: dict[str, Any]) -> str:
        """The human's answer to exactly this call: ALLOWED (once), ALWAYS, or DENIED (also when unanswered
        in MACHINA_PERMISSION_TIMEOUT_S, or when the turn was stopped)."""
        digest = inputs_digest(aid, inputs)
        now = self.clock.time()
        approval = Approval(new_approval_id(), chat_id, aid, tier, inputs, digest, now, now + self.timeout_s)
        self.store.save(approval)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[approval.id] = waiter
        try:
            await self._post(bot, approval)
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=max(0.0, approval.expires_at - now))
        except TimeoutError:
            await self.expire(bot, approval.id)
            return DENIED
        finally:
            self._waiters.pop(approval.id, None)

    async def cancel_waiting(self, bot: Bot, chat_id: int) -> None:
        """/stop: the chat's turn ends, so its open questions are answered no (and their buttons removed,
        so that a later press cannot run the call on its own)."""
        for approval_id, waiter in list(self._waiters.items()):
            approval = self.store.get(approval_id)
            if approval is None or approval.chat_id != chat_id or approval.state != PENDING:
                continue
            approval.state, approval.decided_at = DENIED, self.clock.time()
            approval.outcome = "❌ denied: the turn was stopped"
            self.store.save(approval)
            await self._mark(bot, approval)
            if not waiter.done():
                waiter.set_result(DENIED)

    async def _post(self, bot: Bot, approval: Approval) -> None:
        shown = json.dumps(approval.inputs, indent=1, ensure_ascii=False, sort_keys=True)
        head = f"🔐 Approval needed: <b>{html.escape(approval.aid)}</b> (tier {approval.tier})\n"
        expiry = f"\nNo answer within {int(approval.expires_at - approval.created_at)} s means no."
        if len(shown) <= INLINE_INPUTS_MAX:
            text = f"{head}Inputs:\n<pre>{html.escape(shown)}</pre>{expiry}"
        else:
            await bot.send_document(
                approval.chat_id,
                shown.encode(),
                filename=f"inputs-{approval.id}.json",
                caption=f"Full inputs of {approval.aid} ({len(shown)} characters)",
            )
            text = f"{head}Inputs: {len(shown)} characters, in the file above.{expiry}"
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("Allow once", callback_data=callback_data(approval.id, "o")),
                    InlineKeyboardButton("Deny", callback_data=callback_data(approval.id, "d")),
                    InlineKeyboardButton("Always", callback_data=callback_data(approval.id, "a")),
                ]
            ]
        )
        message = await bot.send_message(approval.chat_id, text, parse_mode="HTML", reply_markup=keyboard)
        # Reread: a /stop or an expiry may have decided it while the message was on its way.
        current = self.store.get(approval.id) or approval
        current.message_id = approval.message_id = message.message_id
        self.store.save(current)
        if current.state != PENDING:
            await self._mark(bot, current)

    # --- a human presses ---------------------------------------------------------------------------------

    async def on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        _, approval_id, choice = [*query.data.split(":"), "", ""][:3]
        approval = self.store.get(approval_id)
        chat_id = query.message.chat.id if query.message is not None else None
        if approval is None or choice not in CHOICES:
            await query.answer("Unknown approval.")
            return
        if chat_id != approval.chat_id:
            log.warning("approval %s pressed in chat %s, asked in %s: ignored", approval.id, chat_id, approval.chat_id)
            await query.answer("This approval belongs to another chat.")
            return
        if approval.state != PENDING:
            await query.answer(f"Already {approval.state}.")
            return
        if self.clock.time() >= approval.expires_at:
            await self.expire(context.bot, approval.id)
            await query.answer("Expired: denied.")
            return
        await self._decide(context.bot, approval, CHOICES[choice], query.from_user.id)
        await query.answer(_SHOWN[approval.state])

    async def _decide(self, bot: Bot, approval: Approval, decision: str, user_id: int) -> None:
        waiter = self._waiters.get(approval.id)
        token: str | None = None
        if decision in (ALLOWED, ALWAYS) and waiter is None:
            # The turn that asked is gone (a restart): the bot itself leases and runs the call once.
            try:
                token = await self.lease(approval.aid, approval.tier, approval.inputs_digest)
            except Exception as exc:  # the toolhost refused or is down: nothing may run
                log.warning("no lease for approval %s: %s", approval.id, exc)
                decision = DENIED
        if decision == ALWAYS and token is not None:
            # The agent session would have written the standing approval; here the bot does it.
            who = f"Telegram user {user_id} in chat {approval.chat_id}"
            self.rules.add(approval.aid, approval.inputs, added_by=who)
        approval.state, approval.decided_by, approval.decided_at = decision, user_id, self.clock.time()
        approval.outcome = f"{_SHOWN[decision]} by user {user_id}"
        self.store.save(approval)
        log.info("approval %s of %s: %s by user %s", approval.id, approval.aid, decision, user_id)
        await self._mark(bot, approval)
        if waiter is not None and not waiter.done():
            waiter.set_result(decision)
        elif token is not None:
            await self._run_orphan(bot, approval, token)

    async def _run_orphan(self, bot: Bot, approval: Approval, token: str) -> None:
        """The turn that asked is gone (a restart): run the approved call once and post what it did."""
        host = self.toolhost()
        reply = await asyncio.to_thread(host.call, approval.aid, approval.inputs, lease_token=token)
        body = json.dumps(reply.output if reply.ok else {"status": reply.status, "error": reply.error})
        text = f"Ran {approval.aid} (approved after a restart): {reply.status}\n{body[:3500]}"
        await bot.send_message(approval.chat_id, text)

    async def lease(self, aid: str, tier: int, digest: str) -> str:
        """A single-use lease for the call with this AID and inputs digest (an administrative toolhost peer)."""
        host = self.toolhost()
        granted = await asyncio.to_thread(host.issue_lease, aid, tier, LEASE_TTL_MS, inputs_digest=digest)
        return str(granted["lease_token"])

    # --- expiry and restarts -----------------------------------------------------------------------------

    async def expire(self, bot: Bot, approval_id: str) -> None:
        approval = self.store.get(approval_id)
        if approval is None or approval.state != PENDING:
            return
        approval.state, approval.decided_at = EXPIRED, self.clock.time()
        approval.outcome = "⌛ expired: no answer in time, denied"
        self.store.save(approval)
        log.info("approval %s of %s expired: denied", approval.id, approval.aid)
        await self._mark(bot, approval)
        waiter = self._waiters.get(approval.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(DENIED)

    async def recover(self, bot: Bot, job_queue: JobQueue[Any] | None) -> int:
        """At start: expire overdue approvals, schedule the expiry of the others; how many are still open."""
        now = self.clock.time()
        self.store.prune(now)
        still_open = 0
        for approval in self.store.pending():
            if approval.expires_at <= now or job_queue is None:
                await self.expire(bot, approval.id)
                continue
            still_open += 1
            job_queue.run_once(self._expiry_job(approval.id), when=approval.expires_at - now, name=approval.id)
        return still_open

    def _expiry_job(self, approval_id: str) -> Callable[[ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        async def job(context: ContextTypes.DEFAULT_TYPE) -> None:
            await self.expire(context.bot, approval_id)

        return job

    async def _mark(self, bot: Bot, approval: Approval) -> None:
        """Replace the question and its buttons with the outcome (once the message exists)."""
        if approval.message_id is None:
            return  # still being posted: _post marks it when it is
        text = f"Approval of {approval.aid} (tier {approval.tier}): {approval.outcome or approval.state}"
        try:
            await bot.edit_message_text(text, chat_id=approval.chat_id, message_id=approval.message_id)
        except TelegramError as exc:
            log.warning("could not mark approval %s in the chat: %s", approval.id, exc)
            await bot.send_message(approval.chat_id, text)

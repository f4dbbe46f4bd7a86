"""One tool call, from request to reply: the single code path every caller's tool call takes.

resolve the AID -> validate inputs against the manifest -> idempotency -> permission (mode, overrides)
-> lease (approval of an "ask", MACHINA_LEASE_ENFORCE, or a call asking for the network)
-> run on the tool's path -> reply, one log line
"""

from __future__ import annotations

import logging
from typing import Any

from machina import toolapi
from machina.clock import SYSTEM_CLOCK, Clock
from machina.ipc.peercred import PeerCred
from machina.log import fields, log_context
from machina.toolhost import permissions as perm
from machina.toolhost.broker import CallContext
from machina.toolhost.catalog import Catalog, Resolved, ToolUnavailable
from machina.toolhost.idempotency import IdempotencyCache, InFlight, Mismatch, fingerprint
from machina.toolhost.leases import LeaseError, LeaseStore
from machina.toolhost.protocol import BAD_REQUEST, CallRequest, reply
from machina.toolhost.runners import ToolRunner

log = logging.getLogger("machina.toolhost.calls")

KEPT_STATUSES = frozenset({toolapi.OK, toolapi.TOOL_ERROR, toolapi.TIMEOUT})  # the tool ran: replay these


class CallHandler:
    def __init__(
        self,
        catalog: Catalog,
        permissions: perm.Permissions,
        leases: LeaseStore,
        lease_enforce: bool,
        idempotency: IdempotencyCache,
        runner: ToolRunner,
        clock: Clock = SYSTEM_CLOCK,
        autonomic: perm.AutonomicApproval | None = None,
    ) -> None:
        self.catalog = catalog
        self.permissions = permissions
        self.leases = leases
        self.lease_enforce = lease_enforce
        self.idempotency = idempotency
        self.runner = runner
        self.clock = clock
        self.autonomic = autonomic or perm.AutonomicApproval()
        self.calls_total = 0
        self.calls_by_status: dict[str, int] = {}

    def call(self, request: CallRequest, peer: PeerCred) -> dict[str, Any]:
        started = self.clock.monotonic()
        with log_context(request_id=request.request_id, aid=request.aid):
            answer, path = self._call(request, peer)
            answer["duration_ms"] = round((self.clock.monotonic() - started) * 1000, 3)
            self._count(answer["status"])
            level = logging.INFO if answer["status"] in KEPT_STATUSES else logging.WARNING
            log.log(
                level,
                "tool call %s",
                answer["status"],
                extra=fields(run_id=request.run_id, uid=peer.uid, path=path, ms=answer["duration_ms"]),
            )
        return answer

    def _call(self, request: CallRequest, peer: PeerCred) -> tuple[dict[str, Any], str]:
        try:
            resolved = self.catalog.resolve(request.aid)
        except ToolUnavailable as exc:
            return reply(exc.status, error=str(exc)), ""
        problems = resolved.spec.input_errors(request.inputs)
        if problems:
            return reply(toolapi.INVALID_INPUT, error="; ".join(problems[:10])), ""
        key = request.idempotency_key
        if key is None:
            return self._checked_run(request, resolved, peer)
        try:
            earlier = self.idempotency.begin(
                peer.uid, key, fingerprint(request.aid, request.inputs), wait_s=self.runner.settings.tool_timeout_s * 2
            )
        except Mismatch as exc:
            return reply(BAD_REQUEST, error=str(exc)), ""
        except InFlight as exc:
            return reply(toolapi.TIMEOUT, error=f"{exc}; ask again later (it was not run twice)"), "in_flight"
        if earlier is not None:
            return {**earlier, "replayed": True}, "replay"
        answer: dict[str, Any] = reply(toolapi.INTERNAL_ERROR, error="call did not finish")
        try:
            answer, path = self._checked_run(request, resolved, peer)
            return answer, path
        finally:
            self.idempotency.finish(peer.uid, key, answer, keep=answer["status"] in KEPT_STATUSES)

    def _checked_run(self, request: CallRequest, resolved: Resolved, peer: PeerCred) -> tuple[dict[str, Any], str]:
        aid, tier = request.aid, resolved.spec.tier
        decision = self.permissions.decide(aid, tier)
        if decision == perm.DENY:
            return reply(toolapi.DENIED, error=f"{aid} (tier {tier}) is denied ({self._why()})"), ""
        if decision == perm.ASK and request.lease_token is None and self.autonomic.approves(peer.uid, aid, tier):
            log.info("ask answered by MACHINA_AUTONOMIC_* for the autonomic peer", extra=fields(uid=peer.uid))
            decision = perm.ALLOW
        # a network request is never auto-approved: only a human's lease opens the net profile
        wants_network = bool(resolved.runner.network_input and request.inputs.get(resolved.runner.network_input))
        if decision == perm.ASK or (self.lease_enforce and tier > 0) or wants_network:
            refusal = toolapi.APPROVAL_REQUIRED if decision == perm.ASK or wants_network else toolapi.LEASE_REQUIRED
            why = f"{self._why()} asks for approval" if decision == perm.ASK else "MACHINA_LEASE_ENFORCE=1"
            if wants_network:
                why = f"{resolved.runner.network_input}=true asks for the net profile, which only a lease allows"
            if request.lease_token is None:
                return reply(refusal, error=f"{aid} (tier {tier}) needs a lease: {why}"), ""
            try:
                lease = self.leases.consume(request.lease_token, aid, tier, request.inputs)
            except LeaseError as exc:
                return reply(refusal, error=f"{aid} (tier {tier}) needs a lease: {exc}"), ""
            log.info("lease %s spent on %s", lease.lease_id, aid)
        context = CallContext(request.run_id, request.request_id, request.capabilities)
        outcome = self.runner.run(resolved.runner, request.inputs, context, resolved.plugin)
        return reply(outcome.status, outcome.output, outcome.error), outcome.path

    def _why(self) -> str:
        if self.permissions.overrides:
            return f"MACHINA_PERMISSION_MODE={self.permissions.mode} with overrides"
        return f"MACHINA_PERMISSION_MODE={self.permissions.mode}"

    def _count(self, status: str) -> None:
        self.calls_total += 1
        self.calls_by_status[status] = self.calls_by_status.get(status, 0) + 1

"""The step loop: one run of one goal, from a request to a :class:`RunResult` and a run log.

Each step: ask the chooser (selector and/or policy, by control mode) what to do with the menu; resolve the
picked tool's inputs (bindings, then the policy's patch) and check them against its inputs_schema; guard
against loops; call the tool through the ToolClient inside a transaction over the run state; log.  The run
stops when the goal is complete (``done``), on ``NOOP`` / ``ASK_SUP``, or on a breaker: max steps, max
invalid picks, the loop guard (the same call from the same state more than ``max_repeats`` times), or an
open policy breaker under POLICY_ONLY.

An :class:`Engine` holds what outlives one run (catalog, tool client, selectors, the policy's circuit
breaker): a worker builds one and calls :meth:`Engine.run` per job.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from machina import __version__, approvals
from machina.approvals import LEASES_KEY, approval, token_for, without_leases
from machina.audit.canonical import digest
from machina.audit.chain import Chain
from machina.audit.runlog import LOG_FORMAT, RunLogWriter, log_path
from machina.clock import SYSTEM_CLOCK, Clock
from machina.engine import genesis_stages as genesis
from machina.engine import result as rs
from machina.engine.bindings import NotReady, apply_patch, bound_inputs
from machina.engine.catalog import Catalog
from machina.engine.completion import is_complete
from machina.engine.menu import Menu, MenuEntry, Menus
from machina.engine.request import Capabilities, ControlMode, RequestError, RunRequest, parse_request
from machina.engine.result import RunResult
from machina.engine.selectors import ASK_SUP, NOOP, Selector, StepContext
from machina.engine.selectors.breaker import CircuitBreaker
from machina.engine.selectors.chooser import Chooser, Decision, ModeChooser
from machina.engine.selectors.driver import DriverSettings, PolicyDriver
from machina.engine.selectors.registry import build_selector
from machina.engine.state import RunState
from machina.exitcodes import MachinaError
from machina.log import fields, log_context, redact
from machina.manifests.goals import GoalSpec
from machina.metrics.figures import ToolFigures
from machina.toolapi import (
    APPROVAL_REQUIRED,
    DENIED,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_INPUT,
    LEASE_REQUIRED,
    SANDBOX_ERROR,
    UNKNOWN_TOOL,
    ToolClient,
    ToolReply,
)

if TYPE_CHECKING:
    from machina.config import Config
    from machina.root import Root

logger = logging.getLogger(__name__)

SuccessHook = Callable[[str, str], None]  # (aid, goal text): e.g. EmbedClient.record_success


ERROR_LOG_MAX = 2000
UNAVAILABLE = "unavailable"  # the tool event status when the toolhost could not be reached

ASK_SUP_TOOL = "AID.ASK_SUP.v1"  # its success means "stop and ask a supervisor"

# Tool reply statuses that end the run, and the run status they end it with.
_ENDING_STATUSES: dict[str, str] = {
    APPROVAL_REQUIRED: rs.ASKED,
    LEASE_REQUIRED: rs.ASKED,
    DENIED: rs.FAILED,
    FORBIDDEN: rs.FAILED,
}
_INVALID_STATUSES = (INVALID_INPUT, UNKNOWN_TOOL)  # the pick was wrong: counts as an invalid pick
# The toolhost cannot run tools at all (unreachable, sandbox not available): end at once, retryable later.
_INFRASTRUCTURE_STATUSES = (UNAVAILABLE, SANDBOX_ERROR)


def new_run_id(clock: Clock = SYSTEM_CLOCK) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock.time())) + "_" + secrets.token_hex(5)


class Engine:
    """Runs goals.  Not thread-safe: one engine per worker process (or per thread)."""

    def __init__(
        self,
        *,
        tools: ToolClient,
        catalog: Catalog,
        logs_dir: str,
        selector: Selector,
        driver: PolicyDriver | None = None,
        breaker: CircuitBreaker | None = None,
        audit_key: str | None = None,
        fsync: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        on_success: SuccessHook | None = None,
    ) -> None:
        self.tools = tools
        self.catalog = catalog
        self.logs_dir = logs_dir
        self.selector = selector
        self.driver = driver
        self.breaker = breaker or CircuitBreaker(3, 30000, clock)
        self.chain = Chain(audit_key)
        self.fsync = fsync
        self.clock = clock
        self.on_success = on_success
        self.chooser = ModeChooser(selector, driver, self.breaker)
        self.menus = Menus()

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        root: Root,
        tools: ToolClient,
        *,
        clock: Clock = SYSTEM_CLOCK,
        catalog: Catalog | None = None,
        selector: Selector | None = None,
        on_success: SuccessHook | None = None,
    ) -> Engine:
        settings = DriverSettings.from_config(cfg, root.path)
        selector = selector or build_selector(cfg, root)
        if on_success is None:  # a selector that learns from successes (GPU_CENTROID) hears of them
            on_success = getattr(selector, "record_success", None)
        return cls(
            tools=tools,
            catalog=catalog or Catalog.load(root),
            logs_dir=root.logs,
            selector=selector,
            driver=PolicyDriver(settings) if settings else None,
            breaker=CircuitBreaker(
                cfg["MACHINA_POLICY_BREAKER_FAILURES"], cfg["MACHINA_POLICY_BREAKER_COOLDOWN_MS"], clock
            ),
            audit_key=cfg["MACHINA_AUDIT_KEY"],
            fsync=cfg["MACHINA_WAL_FSYNC"],
            clock=clock,
            on_success=on_success,
        )

    def close(self) -> None:
        """Let go of what the selector holds open (GPU_CENTROID's connection to machina-embed).  The tool
        client is the caller's: it is not closed here."""
        close = getattr(self.selector, "close", None)
        if close is not None:
            close()

    def default_mode(self) -> ControlMode:
        return ControlMode.BLENDED if self.driver else ControlMode.FALLBACK_ONLY

    def run(
        self,
        request: Mapping[str, Any],
        *,
        run_id: str | None = None,
        chooser: Chooser | None = None,
        logs_dir: str | None = None,
        tools: ToolClient | None = None,
    ) -> RunResult:
        """Run one request to its end; the run log is complete when this returns.

        ``chooser``, ``logs_dir`` and ``tools`` replace the engine's own for this run (strict replay).

        Never raises for the request's own faults (they end the run ``failed``); raises OSError when the
        run log cannot be written (the run cannot be audited, so it does not start).
        """
        run_id = run_id or new_run_id(self.clock)
        rid = request.get("request_id") if isinstance(request, Mapping) else None
        request_id = rid if isinstance(rid, str) and rid else run_id
        writer = RunLogWriter(
            log_path(logs_dir or self.logs_dir, run_id),
            run_id=run_id,
            request_id=request_id,
            chain=self.chain,
            fsync=self.fsync,
            clock=self.clock,
        )
        with writer, log_context(request_id=request_id):
            run = _Run(self, request, writer, chooser or self.chooser, tools or self.tools)
            result = run.execute()
        logger.info(
            "run %s %s",
            result.status,
            result.reason,
            extra=fields(run_id=run_id, goal=result.goal_id, steps=result.steps),
        )
        if result.ok and self.on_success is not None:
            self._report_success(result)
        return result

    def _report_success(self, result: RunResult) -> None:
        goal = self.catalog.goals.get(result.goal_id or "")
        if goal is None or self.on_success is None:
            return
        for aid in sorted(result.outputs):
            try:
                self.on_success(aid, goal.text)
            except Exception:  # a hook must never turn a done run into a failure
                logger.warning("success hook failed for %s", aid, exc_info=True)


@dataclass
class _End:
    status: str
    reason: str
    error: str = ""
    retryable: bool = False


class _Run:
    """The state of one run while it executes."""

    def __init__(
        self, engine: Engine, request: Mapping[str, Any], writer: RunLogWriter, chooser: Chooser, tools: ToolClient
    ) -> None:
        self.engine = engine
        self.tools = tools
        self.raw = request
        self.log = writer
        self.chooser = chooser
        self.state = RunState.initial({})
        self.step = 0
        self.invalid = 0
        self.repeats: Counter[tuple[str, str, str]] = Counter()
        self.figures: dict[str, ToolFigures] = {}
        self.calls: list[tuple[str, bool, float]] = []
        self.capabilities: dict[str, Any] | None = None  # the job's _capabilities, passed on to the toolhost
        self.leases: Any = None  # the job's _leases: each approves one call (machina.approvals)
        self.approvals: list[dict[str, Any]] = []
        self.menu = Menu(())
        self.request_caps = Capabilities()
        self.genesis = False  # a goal.GENESIS* goal: stages tracked (machina.engine.genesis_stages)
        self.missing: set[str] = set()  # declared tools that answered "no implementation" in this run

    def execute(self) -> RunResult:
        try:
            request = parse_request(self.raw)
        except RequestError as exc:
            return self._finish(_End(rs.FAILED, "invalid_request", str(exc)), goal_id=self._raw_goal_id())
        goal = self.engine.catalog.goals.get(request.goal_id)
        if goal is None:
            return self._finish(_End(rs.FAILED, "unknown_goal", f"no goal {request.goal_id}"), request.goal_id)
        errors = goal.input_errors(request.inputs)
        if errors:
            return self._finish(_End(rs.FAILED, "invalid_inputs", "; ".join(errors)), request.goal_id)
        self.state = RunState.initial(request.inputs)
        self.genesis = genesis.applies(goal)
        self.request_caps = request.capabilities
        self.capabilities = request.raw.get("_capabilities")
        self.leases = request.raw.get(LEASES_KEY)
        return self._finish(self._loop(request, goal), request.goal_id)

    def _raw_goal_id(self) -> str | None:
        goal_id = self.raw.get("goal_id") if isinstance(self.raw, Mapping) else None
        return goal_id if isinstance(goal_id, str) else None

    def _start(self, request: RunRequest | None, goal: GoalSpec | None) -> None:
        mode = (request.control_mode if request else None) or self.engine.default_mode()
        self.log.emit(
            "start",
            goal_id=goal.goal_id if goal else self._raw_goal_id(),
            goal_digest=goal.digest if goal else None,
            control_mode=mode.value,
            selector=self.engine.selector.name,
            policy_configured=self.engine.driver is not None,
            request_digest=_request_digest(self.raw),
            state_digest=self.state.digest,
            chain_alg=self.log.chain.alg,
            key_id=self.log.chain.key_id,
            log_format=LOG_FORMAT,
            engine=f"machina/{__version__}",
        )

    def _loop(self, request: RunRequest, goal: GoalSpec) -> _End:
        self._start(request, goal)
        tags = tuple(dict.fromkeys(goal.candidate_tags + request.candidate_tags))
        self.menu = self.engine.menus.get(self.engine.catalog.tools, tags, request.capabilities)
        self.log.emit("menu", **self.menu.log_fields())
        mode = request.control_mode or self.engine.default_mode()
        tools = self.engine.catalog.tools
        while True:
            if is_complete(goal, self.state, tools) and not (self.genesis and genesis.unfinished(self.state)):
                return _End(rs.DONE, "complete")
            if self.step >= goal.budget.max_steps:
                return self._breaker("max_steps", f"{goal.budget.max_steps} steps without completing the goal")
            if not self.menu:
                return _End(rs.NOOP, "empty_menu", "no allowed tool has one of the goal's tags")
            self.step += 1
            ctx = StepContext(goal, self.menu, self.state, self.step, mode, tags, tools, frozenset(self.missing))
            end = self._step(ctx, self.chooser.decide(ctx))
            if end is not None:
                return end

    def _step(self, ctx: StepContext, decision: Decision) -> _End | None:
        for event in decision.breaker_events:
            self.log.emit("policy_breaker", step=ctx.step, **event)
        self._log_selection(ctx, decision)
        if decision.ends is not None:
            status, reason = decision.ends
            return self._breaker(reason, "") if status == rs.BREAKER else _End(status, reason)
        selection = decision.selection
        if selection is None:
            failure = (decision.policy or {}).get("error", "no answer")
            return self._invalid(ctx, f"the policy gave no usable answer ({failure})", None)
        if selection.kind == NOOP:
            return _End(rs.NOOP, "selector_noop")
        if selection.kind == ASK_SUP:
            return _End(rs.ASKED, "selector_ask_sup")
        entry = ctx.menu.by_sid(selection.sid or "")
        if entry is None:
            return self._invalid(ctx, f"{selection.sid} is not on the menu", None)
        try:
            inputs = apply_patch(self._inputs(ctx, entry), selection.patch)
        except (NotReady, ValueError) as exc:
            return self._invalid(ctx, str(exc), entry.aid)
        errors = entry.tool.input_errors(inputs)
        if errors:
            return self._invalid(ctx, "inputs do not match the inputs_schema: " + "; ".join(errors), entry.aid)
        key = (self.state.digest, entry.aid, digest(inputs))
        self.repeats[key] += 1
        if self.repeats[key] > ctx.goal.budget.max_repeats:
            return self._breaker("loop_guard", f"{entry.aid} called again with the same inputs from the same state")
        return self._call(ctx, entry, inputs)

    def _inputs(self, ctx: StepContext, entry: MenuEntry) -> dict[str, Any]:
        """The goal's bindings; in a Genesis run, the stage's own inputs for the stages the goal does not bind."""
        made = entry.aid not in self.engine.catalog.tools  # only a tool this run made is off the catalog
        if self.genesis and entry.aid not in ctx.goal.bindings and (entry.aid in genesis.TOOLS or made):
            return genesis.inputs_for(entry.aid, self.state, ctx.missing, self.engine.catalog.tools)
        return bound_inputs(ctx.goal, entry.tool, self.state)

    def _log_selection(self, ctx: StepContext, decision: Decision) -> None:
        chosen = None
        if decision.selection is not None:
            sel = decision.selection
            entry = ctx.menu.by_sid(sel.sid) if sel.sid else None
            chosen = {"kind": sel.kind, "sid": sel.sid, "aid": entry.aid if entry else None, "patch": sel.patch}
        record: dict[str, Any] = {"step": ctx.step, "source": decision.source, "raw": redact(decision.raw)}
        record["chosen"] = chosen
        if decision.fallback_reason:
            record["fallback_reason"] = decision.fallback_reason
        if decision.policy is not None:
            record["policy"] = {k: redact(v) if isinstance(v, str) else v for k, v in decision.policy.items()}
        if decision.ends is not None:
            record["ends"] = {"status": decision.ends[0], "reason": decision.ends[1]}
        self.log.emit("selection", **record)

    def _invalid(self, ctx: StepContext, reason: str, aid: str | None) -> _End | None:
        self.invalid += 1
        self.log.emit("invalid_pick", step=ctx.step, aid=aid, reason=reason[:ERROR_LOG_MAX])
        if self.invalid > ctx.goal.budget.max_invalid_picks:
            return self._breaker("max_invalid_picks", f"{self.invalid} invalid picks")
        return None

    def _breaker(self, reason: str, detail: str) -> _End:
        self.log.emit("breaker", step=self.step, reason=reason, detail=detail)
        return _End(rs.BREAKER, reason, detail)

    def _call(self, ctx: StepContext, entry: MenuEntry, inputs: dict[str, Any]) -> _End | None:
        before = self.state
        run_id = self.log.run_id
        started = time.monotonic()
        diff: list[dict[str, Any]] = []
        token = token_for(self.leases, entry.aid, inputs)
        with before.begin() as tx, log_context(aid=entry.aid):
            try:
                reply = self.tools.call(
                    entry.aid,
                    inputs,
                    request_id=self.log.request_id,
                    run_id=run_id,
                    lease_token=token,
                    idempotency_key=f"{run_id}/{ctx.step}",
                    capabilities=self.capabilities,
                )
            except (MachinaError, OSError, ValueError) as exc:
                took = (time.monotonic() - started) * 1000
                reply = ToolReply(False, UNAVAILABLE, error=f"toolhost call failed: {exc}", duration_ms=took)
            if reply.ok:
                try:
                    tx.set(("outputs", entry.aid), reply.output)
                    stage = genesis.after_success(before, entry.aid, reply.output) if self.genesis else None
                    if stage is not None:  # the stage moves in the same transaction as the call that moved it
                        tx.set(genesis.SLOT, stage)
                    self.state, diff = tx.commit()
                except (ValueError, TypeError) as exc:
                    reply = ToolReply(False, INTERNAL_ERROR, error=f"output not representable: {exc}")
        self._log_tool(ctx, entry, inputs, reply, before, diff)
        if self.genesis and reply.ok and entry.aid == genesis.LOAD:
            self._offer_made_tool(ctx)
        self._note_approval(entry, inputs, reply, token is not None)
        return self._after_tool(ctx, entry, reply)

    def _offer_made_tool(self, ctx: StepContext) -> None:
        """Put the tool LOAD_PLUGIN just loaded on this run's menu (the next SID), if the request allows it."""
        tool = genesis.made_tool(self.state)
        if tool is None or self.menu.by_aid(tool.aid) is not None:
            return  # a declared tool (the missing-tool path) is on the menu already
        why = self.request_caps.why_not(tool.aid)
        if why is None:
            self.menu = self.menu.extended(tool)
        entry = self.menu.by_aid(tool.aid)
        self.log.emit(
            "menu_extended",
            step=ctx.step,
            aid=tool.aid,
            sid=entry.sid if entry else None,
            refused=why,
            by=genesis.LOAD,
            menu_digest=self.menu.log_fields()["menu_digest"],
        )

    def _note_approval(self, entry: MenuEntry, inputs: dict[str, Any], reply: ToolReply, had_lease: bool) -> None:
        """Remember calls that need a lease to run again: the one that asked, and those that spent one."""
        if reply.status in (APPROVAL_REQUIRED, LEASE_REQUIRED):
            self.approvals.append(approval(entry.aid, entry.tool.tier, inputs, approvals.ASKED))
        elif had_lease and reply.status not in (DENIED, FORBIDDEN, UNAVAILABLE):
            self.approvals.append(approval(entry.aid, entry.tool.tier, inputs, approvals.SPENT))

    def _log_tool(
        self,
        ctx: StepContext,
        entry: MenuEntry,
        inputs: dict[str, Any],
        reply: ToolReply,
        before: RunState,
        diff: list[dict[str, Any]],
    ) -> None:
        self.figures.setdefault(entry.aid, ToolFigures()).observe(reply.ok, reply.duration_ms)
        self.calls.append((entry.aid, reply.ok, reply.duration_ms))
        record: dict[str, Any] = {
            "step": ctx.step,
            "sid": entry.sid,
            "aid": entry.aid,
            "ok": reply.ok,
            "status": reply.status,
            "duration_ms": round(reply.duration_ms, 3),
            "state_before": before.digest,
            "state_after": self.state.digest,
            "inputs": inputs,
            "inputs_digest": digest(inputs),
        }
        if reply.ok:
            record["diff"] = diff
        else:
            record["error"] = redact(reply.error)[:ERROR_LOG_MAX]
        self.log.emit("tool", **record)

    def _after_tool(self, ctx: StepContext, entry: MenuEntry, reply: ToolReply) -> _End | None:
        if reply.ok:
            return _End(rs.ASKED, "tool_ask_sup") if entry.aid == ASK_SUP_TOOL else None
        if reply.status in _INFRASTRUCTURE_STATUSES:
            reason = "toolhost_unavailable" if reply.status == UNAVAILABLE else f"tool_{reply.status}"
            return _End(rs.FAILED, reason, f"{entry.aid}: {reply.error}", retryable=True)
        if reply.status in _ENDING_STATUSES:
            return _End(_ENDING_STATUSES[reply.status], f"tool_{reply.status}", f"{entry.aid}: {reply.error}")
        if self.genesis and reply.status == UNKNOWN_TOOL and genesis.MISSING_MARK in reply.error:
            self.missing.add(entry.aid)  # the missing-tool path: Genesis makes it next (an expected miss)
            return None
        if reply.status in _INVALID_STATUSES:
            return self._invalid(ctx, f"{entry.aid}: {reply.status}: {reply.error}", entry.aid)
        if self.genesis and genesis.is_stage_call(self.state, entry.aid):
            # A stage that failed (a compile refused, a load refused, the made tool's first run): the
            # toolhost's reason is the run's; retrying the same bytes cannot succeed.
            return _End(rs.FAILED, "genesis_failed", f"{entry.aid}: {reply.error}")
        return None  # an ordinary tool failure: the selector may retry or try something else

    def _finish(self, end: _End, goal_id: str | None) -> RunResult:
        if self.log.seq == 0:
            self._start(None, None)
        self.log.emit(
            "done",
            status=end.status,
            reason=end.reason,
            error=redact(end.error)[:ERROR_LOG_MAX],
            steps=self.step,
            invalid_picks=self.invalid,
            state_digest=self.state.digest,
            tool_stats=rs.tool_totals(self.figures),
        )
        return RunResult(
            run_id=self.log.run_id,
            request_id=self.log.request_id,
            goal_id=goal_id,
            status=end.status,
            reason=end.reason,
            steps=self.step,
            state_digest=self.state.digest,
            log_path=self.log.path,
            tool_stats=dict(self.figures),
            tool_calls=self.calls,
            outputs=self.state.snapshot()["outputs"],
            error=end.error,
            retryable=end.retryable,
            approvals=self.approvals,
        )


def _request_digest(raw: Any) -> str | None:
    """The digest of the request as its sender wrote it: the leases an approval added are not part of it."""
    try:
        return digest(without_leases(raw) if isinstance(raw, Mapping) else raw)
    except (TypeError, ValueError):
        return None


__all__ = ["Engine", "Menu", "RunResult", "new_run_id"]

"""Which path each tool takes, and running a call on it.

    path     used by                                                sandbox
    inline   NOOP, ASK_SUP (they touch nothing and run no code of   none: a pure function in the toolhost
             the call's: an empty output, or the question echoed)   (no executor hop; issue 16)
    pool     FILE.*, ERROR_SCAN, REPORT_SUMMARY, RUN.LOG.SUMMARY,   a pre-started Python executor of the
             MEMORY.*, EMBED.TEXT, QUEUE.ENQUEUE,                   ``strict`` pool (the NET.* tools: the
             PROC.SELF_METRICS, NET.HTTP_GET, NET.WEB_SEARCH        ``net`` pool), recycled after N calls
                                                                    or a failure
    fresh    GPU_SMOKE (GPU devices bound); every pool tool when    a Python executor started for this call
             MACHINA_TOOLHOST_POOL_SIZE=0
    shell    SHELL.EXEC                                             a new bubblewrap per call, the program
                                                                    itself as the sandboxed process
    code     CODE.EXEC, UTIL.RUN                                    a new bubblewrap per call, the interpreter
                                                                    itself as the sandboxed process
    probe    GPU_METRICS                                            a new bubblewrap per call with the GPU
                                                                    devices bound, nvidia-smi as its process
    util     UTIL.SAVE, UTIL.UPDATE, UTIL.LIST, UTIL.DELETE         none: the toolhost keeps the saved code
                                                                    (machina.toolhost.utilities), runs none
    genesis  GENESIS.WRITE_FILE, GENESIS.COMPILE_SHARED,            none for writing and loading (the toolhost
             GENESIS.LOAD_PLUGIN                                    keeps the files, machina.toolhost.genesis);
                                                                    the acceptance test runs as a plugin
    vecdb    VECDB.UPSERT, VECDB.QUERY                              none: numbers and JSON kept by the toolhost
                                                                    (machina.toolhost.vecdb)
    missing  DEMO.MISSING_TOOL (declared, never implemented: the    none: a call answers unknown_tool
             missing-tool path's example)
    plugin   pinned plugins                                          a Python executor started for this call,
                                                                    shaped by the plugin's capabilities
    mcp      AID.MCP.<SERVER>.<TOOL>.v1 (machina.mcp)               the MCP server's own: a long-running
                                                                    sandboxed process (stdio) or a remote
                                                                    HTTP server, reached by the bridge

With MACHINA_TOOLHOST_ISOLATE=1 (the prod profile) a pooled executor serves a single call and is then
retired: no two calls share a process, yet a call still finds one started and waiting.

The grant of each built-in (what the broker will hand it) follows its manifest's side effects; a test
holds the two together.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from machina import toolapi
from machina.proc import Rlimits
from machina.sandbox.launch import GPU_DEVICES
from machina.sandbox.policy import SandboxPolicy, SandboxUnavailable
from machina.toolhost.broker import Broker, CallContext
from machina.toolhost.genesis import Genesis
from machina.toolhost.pool import Executor, ExecutorFailed, ExecutorPool, ExecutorSpec, ExecutorTimedOut, start_executor
from machina.toolhost.utilities import UtilityStore
from machina.toolhost.vecdb import VectorStore
from machina.tools import basic
from machina.tools.base import ToolFailure
from machina.tools.code import CodeSettings, code_exec, run_source
from machina.tools.gpu_metrics import gpu_metrics
from machina.tools.shell import ShellSettings, shell_exec

log = logging.getLogger(__name__)

POOL, FRESH, SHELL, CODE, PROBE, UTIL, PLUGIN = "pool", "fresh", "shell", "code", "probe", "util", "plugin"
INLINE = "inline"
#: The tools of the inline path: pure functions of their inputs that open, read, write and start nothing, so
#: a sandbox would isolate nothing; a call saves the executor's round trip (about 0.1 ms of CPU and 0.15 ms
#: of latency per call on a 2-core machine, bench/profile_load.py).  Anything that touches a file, the
#: network, a process or a secret stays in an executor.
INLINE_TOOLS = {"noop": basic.noop, "ask_supervisor": basic.ask_supervisor}
GENESIS, VECDB = "genesis", "vecdb"
MISSING = "missing"
# Built-in manifest entries with no implementation on purpose: what the missing-tool path (Genesis) meets.
MANIFEST_ONLY = frozenset({"AID.DEMO.MISSING_TOOL.v1"})
MCP = "mcp"
HTTP_GRACE_S = 2.0  # the HTTP tools enforce their own timeout; the executor gets this much more
HTTP_TOOLS = frozenset({"http_get", "web_search"})
# What an executor may report; anything else (a confused or compromised executor) becomes a tool error.
EXECUTOR_STATUSES = frozenset({toolapi.OK, toolapi.TOOL_ERROR, toolapi.TIMEOUT, toolapi.DENIED, toolapi.INVALID_INPUT})


@dataclass(frozen=True)
class Runner:
    tool: str  # the executor's tool name (machina.tools.EXECUTOR_TOOLS), the shell tool, or an MCP tool's AID
    path: str
    grants: frozenset[str] = frozenset()
    network: bool = False
    gpu: bool = False
    exec_allowed: bool = False  # plugins with SHELL only
    network_input: str = ""  # an input that, when true, asks for the net profile: such a call needs a lease
    #: inputs naming a file the tool opens for reading: opened before the call and sent with it (a round trip
    #: to the broker saved; the tool asks as before when one could not be opened)
    reads: tuple[str, ...] = ()


def _pool(tool: str, *grants: str, network: bool = False, reads: tuple[str, ...] = ()) -> Runner:
    return Runner(tool, POOL, frozenset(grants), network=network, reads=reads)


BUILTIN_RUNNERS: dict[str, Runner] = {
    "AID.SHELL.EXEC.v1": Runner("shell_exec", SHELL),
    "AID.CODE.EXEC.v1": Runner("code_exec", CODE, network_input="network"),
    "AID.UTIL.RUN.v1": Runner("util_run", CODE),
    "AID.UTIL.SAVE.v1": Runner("util_save", UTIL),
    "AID.UTIL.UPDATE.v1": Runner("util_update", UTIL),
    "AID.UTIL.LIST.v1": Runner("util_list", UTIL),
    "AID.UTIL.DELETE.v1": Runner("util_delete", UTIL),
    "AID.VECDB.UPSERT.v1": Runner("upsert", VECDB),
    "AID.VECDB.QUERY.v1": Runner("query", VECDB),
    "AID.GENESIS.WRITE_FILE.v1": Runner("write", GENESIS),
    "AID.GENESIS.COMPILE_SHARED.v1": Runner("compile", GENESIS),
    "AID.GENESIS.LOAD_PLUGIN.v1": Runner("load", GENESIS),
    "AID.NET.HTTP_GET.v1": _pool("http_get", network=True),
    "AID.NET.WEB_SEARCH.v1": _pool("web_search", network=True),
    "AID.FILE.READ.v1": _pool("file_read", "fs_read", reads=("path",)),
    "AID.FILE.WRITE.v1": _pool("file_write", "fs_write"),
    "AID.FILE.LIST.v1": _pool("file_list", "fs_read"),
    "AID.FILE.SEARCH.v1": _pool("file_search", "fs_read"),
    "AID.FILE.DIFF.v1": _pool("file_diff", "fs_read", reads=("path", "other_path")),
    "AID.FILE.EDIT.v1": _pool("file_edit", "fs_read", "fs_write", reads=("path",)),
    "AID.FILE.APPEND.v1": _pool("file_append", "fs_write"),
    "AID.FILE.DELETE.v1": _pool("file_delete", "fs_write"),
    "AID.ERROR_SCAN.v1": _pool("error_scan", "fs_read", reads=("input_path",)),
    "AID.REPORT_SUMMARY.v1": _pool("report_summary", "fs_write"),
    "AID.RUN.LOG.SUMMARY.v1": _pool("run_log_summary", "fs_read"),
    "AID.MEMORY.APPEND.v1": _pool("memory_append", "memory_write"),
    "AID.MEMORY.QUERY.v1": _pool("memory_query", "memory_read", "embed"),
    "AID.MEMORY.SEARCH.v1": _pool("memory_search", "memory_read"),
    "AID.EMBED.TEXT.v1": _pool("embed_text", "embed"),
    "AID.QUEUE.ENQUEUE.v1": _pool("queue_enqueue", "queue_write"),
    "AID.PROC.SELF_METRICS.v1": _pool("self_metrics", "proc_read"),
    "AID.GPU_SMOKE.v1": Runner("gpu_smoke", FRESH, gpu=True),
    "AID.GPU_METRICS.v1": Runner("gpu_metrics", PROBE, gpu=True),
    "AID.NOOP.v1": Runner("noop", INLINE),
    "AID.ASK_SUP.v1": Runner("ask_supervisor", INLINE),
}


@dataclass(frozen=True)
class Outcome:
    status: str
    output: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    path: str = ""

    @property
    def ok(self) -> bool:
        return self.status == toolapi.OK


@dataclass(frozen=True)
class RunnerSettings:
    """The configured limits every path needs, read once from the configuration."""

    tool_timeout_s: float
    http_timeout_s: float
    tool_rlimits: Rlimits
    http_rlimits: Rlimits
    shell: ShellSettings
    code: CodeSettings
    pool_size: int
    pool_recycle: int
    params: dict[str, dict[str, Any]]  # per executor tool: configured limits sent with each call


class ToolRunner:
    def __init__(
        self, policy: SandboxPolicy, broker: Broker, settings: RunnerSettings, utilities: UtilityStore | None = None
    ) -> None:
        self.policy = policy
        self.broker = broker
        self.settings = settings
        self.utilities = utilities
        self.genesis: Genesis | None = None  # set by the service once the catalog exists (it refreshes it)
        self.vecdb: VectorStore | None = None
        self.pools: dict[str, ExecutorPool] = {}
        self.mcp: Any = None  # machina.mcp.bridge.McpBridge when MCP servers are served
        if settings.pool_size > 0:
            for network in (False, True):
                name = "net" if network else "strict"
                factory = functools.partial(start_executor, policy, self._pool_spec(network))
                self.pools[name] = ExecutorPool(name, factory, settings.pool_size, settings.pool_recycle)

    def start(self) -> None:
        for pool in self.pools.values():
            pool.start()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()

    def path_of(self, runner: Runner) -> str:
        if runner.path == POOL and not self.pools:
            return FRESH
        return runner.path

    def _pool_spec(self, network: bool) -> ExecutorSpec:
        limits = self.settings.http_rlimits if network else self.settings.tool_rlimits
        return ExecutorSpec(network=network, cpu_per_call=limits.cpu_sec, rlimits=replace(limits, cpu_sec=0))

    def _fresh_spec(self, runner: Runner) -> ExecutorSpec:
        limits = self.settings.http_rlimits if runner.network else self.settings.tool_rlimits
        if runner.gpu:
            limits = replace(limits, as_mb=0, nproc=0)  # CUDA needs both unlimited (OPERATIONS.md)
        return ExecutorSpec(
            network=runner.network,
            no_spawn=not runner.exec_allowed,
            one_shot=True,
            devices=GPU_DEVICES if runner.gpu else (),
            rlimits=limits,
        )

    def run(self, runner: Runner, inputs: dict[str, Any], context: CallContext, plugin: Any = None) -> Outcome:
        path = self.path_of(runner)
        if path == MCP:
            if self.mcp is None:
                return Outcome(toolapi.UNKNOWN_TOOL, {}, f"no tool {runner.tool} (the MCP bridge is off)", path)
            return self.mcp.call(runner.tool, inputs)
        try:
            if path == INLINE:
                return Outcome(toolapi.OK, INLINE_TOOLS[runner.tool](inputs, None), path=path)
            if path == SHELL:
                output = shell_exec(inputs, self.policy, self.settings.shell)
                return Outcome(toolapi.OK, output, path=path)
            if path == CODE:
                return Outcome(toolapi.OK, self._run_code(runner, inputs), path=path)
            if path == PROBE:
                limits = replace(self.settings.tool_rlimits, as_mb=0, nproc=0)  # as CUDA wants (OPERATIONS.md)
                return Outcome(toolapi.OK, gpu_metrics(self.policy, limits), path=path)
            if path == GENESIS:
                if self.genesis is None:
                    raise ToolFailure("Genesis is not available in this toolhost")
                return Outcome(toolapi.OK, getattr(self.genesis, runner.tool)(inputs), path=path)
            if path == VECDB:
                if self.vecdb is None:
                    raise ToolFailure("the vector store is not available in this toolhost")
                return Outcome(toolapi.OK, getattr(self.vecdb, runner.tool)(inputs), path=path)
            if path == UTIL:
                return Outcome(toolapi.OK, self._keep_utility(runner, inputs), path=path)
            message = self._message(runner, inputs, context, plugin)
            if path == POOL:
                return self._run_pooled(runner, message, context)
            return self._run_fresh(runner, message, context, path)
        except ToolFailure as exc:
            return Outcome(exc.status, exc.output, str(exc), path)
        except SandboxUnavailable as exc:
            return Outcome(toolapi.SANDBOX_ERROR, {}, str(exc), path)

    def _run_code(self, runner: Runner, inputs: dict[str, Any]) -> dict[str, Any]:
        if runner.tool == "code_exec":
            return code_exec(inputs, self.policy, self.settings.code)
        record, sha = self._store().pinned_code(inputs)
        limits: dict[str, Any] = {
            k: inputs[k] for k in ("stdin", "timeout_ms", "stdout_max", "stderr_max") if k in inputs
        }
        return run_source(
            record["code"],
            {"lang": record["lang"], **limits},
            self.policy,
            self.settings.code,
            args=list(inputs.get("args", [])),
            extra={"name": record["name"], "sha256": sha},
        )

    def _keep_utility(self, runner: Runner, inputs: dict[str, Any]) -> dict[str, Any]:
        store = self._store()
        if runner.tool == "util_save":
            return store.save(inputs)
        if runner.tool == "util_update":
            return store.update(inputs)
        if runner.tool == "util_delete":
            return store.delete(inputs)
        return store.listing()

    def _store(self) -> UtilityStore:
        if self.utilities is None:
            raise ToolFailure("saved utilities are not available in this toolhost")
        return self.utilities

    def _message(self, runner: Runner, inputs: dict[str, Any], context: CallContext, plugin: Any) -> dict[str, Any]:
        params = dict(self.settings.params.get(runner.tool, {}))
        params.update(run_id=context.run_id, request_id=context.request_id)
        if plugin is not None:
            params.update(self.settings.params.get("plugin", {}))
            return {"t": "plugin", "name": plugin.file, "source": plugin.source, "inputs": inputs, "params": params}
        return {"t": "call", "tool": runner.tool, "inputs": inputs, "params": params}

    def _timeout_s(self, runner: Runner) -> float:
        if runner.tool in HTTP_TOOLS:
            return self.settings.http_timeout_s + HTTP_GRACE_S
        return self.settings.tool_timeout_s

    def _run_pooled(self, runner: Runner, message: dict[str, Any], context: CallContext) -> Outcome:
        pool = self.pools["net" if runner.network else "strict"]
        executor = pool.acquire()
        outcome = self._converse(executor, runner, message, context, POOL)
        pool.release(executor, healthy=outcome.ok)
        return outcome

    def _run_fresh(self, runner: Runner, message: dict[str, Any], context: CallContext, path: str) -> Outcome:
        try:
            executor = start_executor(self.policy, self._fresh_spec(runner))
        except ExecutorFailed as exc:
            return Outcome(toolapi.SANDBOX_ERROR, {}, f"cannot start the tool's sandbox: {exc}", path)
        try:
            return self._converse(executor, runner, message, context, path)
        finally:
            executor.kill()

    def _converse(
        self, executor: Executor, runner: Runner, message: dict[str, Any], context: CallContext, path: str
    ) -> Outcome:
        scope = self.broker.scope(runner.grants, context)
        deadline = time.monotonic() + self._timeout_s(runner)
        try:
            fds: list[int] = []
            if runner.reads and message["t"] == "call":
                message["opened"], fds = scope.preopen(message["inputs"], runner.reads)
            done = executor.call(message, scope, deadline, fds)
        except ExecutorTimedOut:
            executor.kill()
            return Outcome(
                toolapi.TIMEOUT, {}, f"no result within {self._timeout_s(runner):g}s: the tool was killed", path
            )
        except ExecutorFailed as exc:
            executor.kill()
            return Outcome(toolapi.TOOL_ERROR, {}, f"the tool's executor failed: {exc}", path)
        finally:
            scope.close()
        output = done.get("output") if isinstance(done.get("output"), dict) else {}
        status = str(done.get("status") or toolapi.TOOL_ERROR)
        if status not in EXECUTOR_STATUSES or (done.get("ok") is not True and status == toolapi.OK):
            status = toolapi.TOOL_ERROR
        return Outcome(status, output or {}, str(done.get("error") or ""), path)

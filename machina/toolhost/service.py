"""machina-toolhost as a service: start (sandbox, tools, leases, pools, socket), serve, close.

Peers (SO_PEERCRED, checked before a byte is read): the toolhost's own uid, root and
MACHINA_TOOLHOST_ALLOWED_UIDS may call tools; only root and MACHINA_TOOLHOST_ADMIN_UIDS may issue or
collect leases (never the toolhost's own uid by itself: the worker usually shares it).  Tool processes
cannot reach the socket at all: their sandbox has no view of the runtime directory.

Without bubblewrap (no pid namespace between tools and the toolhost) the toolhost makes itself
non-dumpable, so a tool of the same uid can neither ptrace it nor read its /proc/<pid>/environ (where
systemd's EnvironmentFile puts the suite's secrets).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import prctl

from machina import toolapi
from machina.clock import SYSTEM_CLOCK, Clock
from machina.config import Config
from machina.fsutil import ensure_dir
from machina.ipc import activation
from machina.ipc.jsonlines import JsonLineServer, ServerLimits, bind_unix
from machina.ipc.peercred import PeerCred
from machina.manifests.tools import load_tools, toolpack_manifests
from machina.owned import sweep_temps
from machina.plugins.loader import Plugin
from machina.proc import Rlimits
from machina.root import Root, open_root
from machina.sandbox import etcview, launch
from machina.sandbox.policy import SandboxPolicy, resolve_policy, verify
from machina.signals import SignalRelay
from machina.toolhost import permissions as perm
from machina.toolhost import protocol
from machina.toolhost.broker import Broker, CallContext, ServiceEmbedder, process_metrics
from machina.toolhost.calls import CallHandler
from machina.toolhost.catalog import Catalog, Resolved, ToolUnavailable, plugin_runner
from machina.toolhost.confine import ConfinedRoot
from machina.toolhost.enqueue import Enqueuer
from machina.toolhost.genesis import Genesis, GenesisSettings
from machina.toolhost.idempotency import IdempotencyCache
from machina.toolhost.leases import LeaseStore
from machina.toolhost.memsearch import MemorySearch
from machina.toolhost.runners import RunnerSettings, ToolRunner
from machina.toolhost.utilities import UtilityStore
from machina.toolhost.vecdb import VectorStore

if TYPE_CHECKING:
    from machina.mcp.bridge import McpBridge
from machina.tools.code import CodeSettings
from machina.tools.shell import ShellSettings

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
MCP_SERVER_NPROC = 256


def rlimits(cfg: Config, prefix: str) -> Rlimits:
    return Rlimits(
        cpu_sec=cfg[f"{prefix}_RLIMIT_CPU_SEC"],
        as_mb=cfg[f"{prefix}_RLIMIT_AS_MB"],
        fsize_mb=cfg[f"{prefix}_RLIMIT_FSIZE_MB"],
        nofile=cfg[f"{prefix}_RLIMIT_NOFILE"],
        nproc=cfg[f"{prefix}_RLIMIT_NPROC"],
    )


def runner_settings(cfg: Config) -> RunnerSettings:
    read_params = {"read_max_bytes": cfg["MACHINA_FILE_READ_MAX_BYTES"]}
    memory_params = {"max_records": cfg["MACHINA_MEMORY_QUERY_MAX_RECORDS"], "fsync": cfg["MACHINA_WAL_FSYNC"]}
    http_params = {"timeout_ms": cfg["MACHINA_HTTP_TIMEOUT_MS"], "max_bytes": cfg["MACHINA_HTTP_STDOUT_MAX"]}
    code_timeout_s = cfg["MACHINA_CODE_TIMEOUT"]
    return RunnerSettings(
        tool_timeout_s=cfg["MACHINA_TOOL_TIMEOUT_MS"] / 1000.0,
        http_timeout_s=cfg["MACHINA_HTTP_TIMEOUT_MS"] / 1000.0,
        tool_rlimits=rlimits(cfg, "MACHINA_TOOL"),
        http_rlimits=rlimits(cfg, "MACHINA_HTTP"),
        shell=ShellSettings(
            allowed=tuple(cfg["MACHINA_SHELL_ALLOWED_EXE"]),
            timeout_ms=cfg["MACHINA_SHELL_TIMEOUT_MS"],
            stdout_max=cfg["MACHINA_SHELL_STDOUT_MAX"],
            stderr_max=cfg["MACHINA_SHELL_STDERR_MAX"],
            rlimits=rlimits(cfg, "MACHINA_SHELL"),
        ),
        code=CodeSettings(
            timeout_ms=code_timeout_s * 1000,
            stdout_max=cfg["MACHINA_SHELL_STDOUT_MAX"],
            stderr_max=cfg["MACHINA_SHELL_STDERR_MAX"],
            rlimits=replace(rlimits(cfg, "MACHINA_SHELL"), cpu_sec=code_timeout_s),
        ),
        pool_size=cfg["MACHINA_TOOLHOST_POOL_SIZE"],
        pool_recycle=1 if cfg["MACHINA_TOOLHOST_ISOLATE"] else cfg["MACHINA_TOOLHOST_POOL_RECYCLE"],
        params={
            "file_read": read_params,
            "file_search": read_params,
            "file_diff": read_params,
            "file_edit": read_params,
            "http_get": {
                **http_params,
                "allowed_hosts": list(cfg["MACHINA_HTTP_ALLOWED_HOSTS"]),
                "default_deny": cfg["MACHINA_HTTP_DEFAULT_DENY"],
            },
            "web_search": {**http_params, "search_url": cfg["MACHINA_SEARCH_URL"]},
            "memory_append": memory_params,
            "memory_query": memory_params,
            "plugin": {**read_params, **memory_params},
        },
    )


class Toolhost:
    name = "machina-toolhost"

    def __init__(
        self, cfg: Config, *, socket_path: str | None = None, bwrap: str | None = None, clock: Clock = SYSTEM_CLOCK
    ):
        self.cfg = cfg
        self.clock = clock
        self._socket_path = socket_path
        self._bwrap = bwrap
        self.started = time.monotonic()
        self.server: JsonLineServer | None = None
        self.runner: ToolRunner | None = None
        self.root_dir: ConfinedRoot | None = None
        self.policy: SandboxPolicy | None = None
        self.etc_view: etcview.EtcView | None = None
        self._previous_view: etcview.EtcView | None = None
        self.mcp: McpBridge | None = None
        self._hangup: SignalRelay | None = None  # SIGHUP -> reload, on a thread of its own (restored at close)
        autonomic = (int(u) for u in cfg["MACHINA_AUTONOMIC_UIDS"])  # the engine's own uid calls tools too
        self.allowed_uids = {0, os.geteuid(), *(int(u) for u in cfg["MACHINA_TOOLHOST_ALLOWED_UIDS"]), *autonomic}
        self.admin_uids = {0, *(int(u) for u in cfg["MACHINA_TOOLHOST_ADMIN_UIDS"])}

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        root = open_root(cfg)
        # The sandboxes' /etc copy lives beside our socket, not in /tmp: gone at every stop, swept after a
        # kill.  Installed before the policy check, whose trial sandbox binds it too.
        self.etc_view = etcview.EtcView(root.runtime_dir)
        self.etc_view.open()
        self._previous_view = etcview.install(self.etc_view)
        self.policy = verify(cfg, resolve_policy(cfg, self._bwrap))
        if self.policy.bwrap is None:
            # No pid namespace hides us from tools: a same-uid tool must not read our environ or ptrace us.
            # (Only then: a non-dumpable parent makes every sandbox start markedly slower.)
            prctl.set_dumpable(False)
        manifests = load_tools(toolpack_manifests(root.toolpacks))
        self.catalog = Catalog(manifests, root.plugins, tuple(cfg["MACHINA_PLUGIN_ALLOWED_CAPS"]))
        state_dir = os.path.join(root.state, "toolhost")
        ensure_dir(state_dir)
        for directory in (state_dir, root.runtime_dir):
            sweep_temps(directory)  # temporary files a SIGKILLed predecessor was writing
        self.leases = LeaseStore(os.path.join(state_dir, "leases.json"), self.clock)
        self.leases.load()
        self.root_dir = ConfinedRoot(root.path)
        if self.policy.bwrap is not None:
            self.etc_view.path()  # the first copy now: a full disk stops the start, not the first tool call
        else:
            launch.scratch_parent()  # where tools get their private directory: fails here if $TMPDIR cannot
        broker = Broker(
            self.root_dir,
            embedder=ServiceEmbedder(root.socket_path("embed"), cfg["MACHINA_GPU_DIM"]),
            enqueue=Enqueuer(lambda: _open_queue(cfg)),
            metrics=lambda: process_metrics(self.started, self.counters),
            fsync=cfg["MACHINA_WAL_FSYNC"],
            memory_search=MemorySearch(root.path, self.clock),
            audit_key=cfg["MACHINA_AUDIT_KEY"],
        )
        utilities = UtilityStore(root.state, fsync=cfg["MACHINA_WAL_FSYNC"])
        self.runner = ToolRunner(self.policy, broker, runner_settings(cfg), utilities)
        self.calls = CallHandler(
            self.catalog,
            perm.Permissions.from_config(cfg["MACHINA_PERMISSION_MODE"], cfg["MACHINA_PERMISSION_OVERRIDES"]),
            self.leases,
            cfg["MACHINA_LEASE_ENFORCE"],
            IdempotencyCache(cfg["MACHINA_TOOLHOST_IDEMPOTENCY_TTL_MS"], self.clock),
            self.runner,
            self.clock,
            autonomic=perm.AutonomicApproval(
                frozenset(int(u) for u in cfg["MACHINA_AUTONOMIC_UIDS"]),
                cfg["MACHINA_AUTONOMIC_APPROVE_ALL_ASK"],
                tuple(cfg["MACHINA_AUTONOMIC_AUTO_APPROVE_AIDS"]),
            ),
        )
        self.runner.vecdb = VectorStore(root.state, broker.embedder, fsync=cfg["MACHINA_WAL_FSYNC"])
        self.runner.genesis = Genesis(
            root.plugins,
            GenesisSettings(
                enabled=cfg["MACHINA_GENESIS_ENABLE"],
                guard=cfg["MACHINA_GENESIS_GUARD"],
                prod_mode=cfg["MACHINA_GENESIS_PROD_MODE"],
                allowed_caps=tuple(cfg["MACHINA_PLUGIN_ALLOWED_CAPS"]),
            ),
            run_test=self._run_plugin_test,
            implemented_aids=self.catalog.implemented_aids,
            refresh=self.catalog.refresh,
            clock=self.clock,
        )
        self.mcp = _mcp_bridge(cfg, self.policy, os.path.join(root.state, "mcp", "pins.json"), self.clock)
        self.catalog.mcp = self.runner.mcp = self.mcp
        self.server = self._listen(root)
        self.runner.start()
        self.mcp.reload()  # each server connects on a thread of its own; the socket serves meanwhile
        self.catalog.refresh()
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            # A reload reads files, takes locks and restarts servers: never inside the handler itself.
            self._hangup = SignalRelay((signal.SIGHUP,), lambda _: self.reload(), "sighup-reload")
            self._hangup.start()
        for file, reason in self.catalog.refused:
            log.warning("plugin %s refused: %s", file, reason)

    def _listen(self, root: Root) -> JsonLineServer:
        inherited = activation.listen_sockets()
        if inherited:
            return JsonLineServer(inherited[0], self.handle, self.authorize, limits=ServerLimits.from_config(self.cfg))
        path = self._socket_path or root.socket_path("toolhost")
        ensure_dir(os.path.dirname(path))
        listener = bind_unix(path, mode=SOCKET_MODE)
        self.socket_path = path
        return JsonLineServer(
            listener, self.handle, self.authorize, owned_path=path, limits=ServerLimits.from_config(self.cfg)
        )

    def serve(self, stop: threading.Event) -> None:
        assert self.server is not None
        self.server.serve(stop)

    def reload(self) -> None:
        """SIGHUP (systemctl reload): read mcp_servers.json again and restart its servers; look at plugins/
        again (pins are still checked for every plugin)."""
        if self.mcp is None:
            return
        log.info("SIGHUP: reloading the MCP servers and the plugins")
        self.mcp.reload()
        self.catalog.refresh()

    def healthy(self) -> bool:
        return True

    def status(self) -> str:
        assert self.policy is not None
        sandbox = "bubblewrap" if self.policy.bwrap else f"NO namespaces ({self.policy.fallback_reason})"
        seccomp = "seccomp on" if self.policy.seccomp else "seccomp off"
        return f"{len(self.catalog.manifests)} built-in tools; sandbox: {sandbox}, {seccomp}"

    def close(self) -> None:
        if self._hangup is not None:
            self._hangup.stop()
            self._hangup = None
        if self.server is not None:
            self.server.close()
        if self.runner is not None:
            self.runner.close()
        if self.mcp is not None:
            self.mcp.close()
        if self.etc_view is not None:
            etcview.install(self._previous_view)
            self.etc_view.close()
        launch.close_scratch()
        if self.root_dir is not None:
            self.root_dir.close()

    # --- requests ---------------------------------------------------------------------------------------

    def authorize(self, peer: PeerCred) -> bool:
        return peer.uid in self.allowed_uids

    def handle(self, request: dict[str, Any], peer: PeerCred) -> dict[str, Any]:
        try:
            op = protocol.op_of(request)
            if op in protocol.ADMIN_OPS and peer.uid not in self.admin_uids:
                log.warning("refused %s from uid %d: not an administrative peer", op, peer.uid)
                return protocol.reply(
                    toolapi.FORBIDDEN, error=f"{op} is only for administrative peers (uid {peer.uid} is not)"
                )
            if op == protocol.OP_CALL:
                return self.calls.call(protocol.parse_call(request), peer)
            if op == protocol.OP_TOOLS_LIST:
                return protocol.reply(toolapi.OK, self.catalog.listing(self._describe))
            if op == protocol.OP_LEASE_ISSUE:
                return self._issue_lease(request, peer)
            if op == protocol.OP_LEASE_GC:
                removed = self.leases.gc()
                return protocol.reply(toolapi.OK, {"removed": removed, "remaining": self.leases.count()})
            if op in (protocol.OP_MCP_STATUS, protocol.OP_MCP_PIN, protocol.OP_MCP_RELOAD):
                return self._mcp_op(op, request, peer)
            if op == protocol.OP_PING:
                return protocol.reply(toolapi.OK, {"pid": os.getpid(), "status": self.status()})
            raise protocol.BadRequest(f"unknown op {op!r}")
        except protocol.BadRequest as exc:
            return protocol.reply(protocol.BAD_REQUEST, error=str(exc))

    def _mcp_op(self, op: str, request: dict[str, Any], peer: PeerCred) -> dict[str, Any]:
        assert self.mcp is not None
        if op == protocol.OP_MCP_PIN:
            server, digest = protocol.parse_mcp_pin(request)
            try:
                status = self.mcp.pin(server, digest)
            except ValueError as exc:
                return protocol.reply(toolapi.TOOL_ERROR, error=str(exc))
            log.info("mcp server %s pinned by uid %d", server, peer.uid)
            return protocol.reply(toolapi.OK, status)
        if op == protocol.OP_MCP_RELOAD:
            log.info("mcp servers reloaded by uid %d", peer.uid)
            self.mcp.reload()
            self.mcp.wait_started(self.cfg["MACHINA_MCP_CONNECT_TIMEOUT_MS"] / 1000.0)
        return protocol.reply(toolapi.OK, self.mcp.status())

    def _issue_lease(self, request: dict[str, Any], peer: PeerCred) -> dict[str, Any]:
        asked = protocol.parse_lease_issue(request)
        aid, tier, ttl_ms = asked.aid, asked.tier, asked.ttl_ms
        max_ttl = self.cfg["MACHINA_LEASE_MAX_TTL_MS"]
        if ttl_ms > max_ttl:
            raise protocol.BadRequest(f"ttl_ms {ttl_ms} is above MACHINA_LEASE_MAX_TTL_MS={max_ttl}")
        if aid == "*" and asked.inputs_digest is not None:
            raise protocol.BadRequest('a lease bound to one call (inputs_digest) names its AID, not "*"')
        if aid != "*":
            try:
                resolved = self.catalog.resolve(aid)
            except ToolUnavailable as exc:
                return protocol.reply(exc.status, error=str(exc))
            if resolved.spec.tier > tier:
                raise protocol.BadRequest(f"{aid} is tier {resolved.spec.tier}: a tier {tier} lease would not cover it")
        token, lease = self.leases.issue(aid, tier, ttl_ms, peer.uid, asked.inputs_digest)
        bound = f" bound to inputs {asked.inputs_digest[:12]}" if asked.inputs_digest else ""
        log.info(
            "lease %s issued for %s tier %d ttl %d ms by uid %d%s", lease.lease_id, aid, tier, ttl_ms, peer.uid, bound
        )
        return protocol.reply(toolapi.OK, {"lease_token": token, **lease.public()})

    def _run_plugin_test(self, plugin: Plugin, inputs: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """A Genesis plugin's acceptance test: one run in its own sandbox, shaped by its capabilities."""
        assert self.runner is not None
        outcome = self.runner.run(plugin_runner(plugin), inputs, CallContext(request_id="genesis-test"), plugin)
        return outcome.status, outcome.output, outcome.error

    def _describe(self, resolved: Resolved) -> dict[str, Any]:
        assert self.runner is not None
        return {
            "path": self.runner.path_of(resolved.runner),
            "permission": self.calls.permissions.decide(resolved.spec.aid, resolved.spec.tier),
        }

    def counters(self) -> dict[str, Any]:
        pools = {name: pool.stats() for name, pool in (self.runner.pools.items() if self.runner else [])}
        return {
            "calls_total": self.calls.calls_total,
            "calls_by_status": dict(self.calls.calls_by_status),
            "pools": pools,
        }


def _mcp_bridge(cfg: Config, policy: SandboxPolicy, pins_path: str, clock: Clock) -> McpBridge:
    from machina.config.mcp_servers import placeholder_environment
    from machina.mcp.bridge import BridgeSettings, McpBridge
    from machina.mcp.launch import StdioSettings
    from machina.mcp.pins import PinStore

    # Long-running: no CPU-time or address-space limit (runtimes such as node reserve much address space);
    # threads count as processes for RLIMIT_NPROC, hence a larger process limit than a tool's.
    limits = replace(rlimits(cfg, "MACHINA_TOOL"), cpu_sec=0, as_mb=0, nproc=MCP_SERVER_NPROC)
    settings = BridgeSettings(
        config_path=cfg["MACHINA_MCP_CONFIG"],
        tool_timeout_s=cfg["MACHINA_MCP_TOOL_TIMEOUT_MS"] / 1000.0,
        connect_timeout_s=cfg["MACHINA_MCP_CONNECT_TIMEOUT_MS"] / 1000.0,
        result_max_bytes=cfg["MACHINA_MCP_RESULT_MAX_BYTES"],
        stdio=StdioSettings(tuple(cfg["MACHINA_MCP_ALLOWED_COMMANDS"]), limits),
    )
    pins = PinStore(pins_path, fsync=cfg["MACHINA_WAL_FSYNC"], clock=clock)
    return McpBridge(settings, policy, pins, placeholder_environment(cfg.env_file), clock)


def _open_queue(cfg: Config) -> Any:
    from machina.queue import open_queue  # type: ignore[import-not-found,unused-ignore]

    return open_queue(cfg)

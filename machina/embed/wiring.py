"""Build the embedding engine from the configuration (shared by the service and ``--local`` commands)."""

from __future__ import annotations

import os

from machina.config import Config
from machina.embed.engine import EmbedEngine, EngineSettings
from machina.embed.history import SuccessHistory
from machina.embed.providers import CommandProvider, CommandSpec, absolute_command
from machina.fsutil import ensure_dir
from machina.owned import sweep_temps
from machina.proc import Rlimits
from machina.root import open_root
from machina.sandbox.policy import resolve_policy, verify


def command_provider(cfg: Config) -> CommandProvider | None:
    if cfg["MACHINA_EMBED_PROVIDER"] != "cmd":
        return None
    spec = CommandSpec(
        argv=absolute_command(tuple(cfg["MACHINA_EMBED_CMD"]), os.getcwd()),
        timeout_ms=cfg["MACHINA_EMBED_TIMEOUT_MS"],
        rlimits=Rlimits(
            cpu_sec=-(-cfg["MACHINA_EMBED_CPU_MS"] // 1000),  # RLIMIT_CPU counts whole seconds: round up, not to 0
            as_mb=cfg["MACHINA_EMBED_AS_MB"],
            nproc=cfg["MACHINA_EMBED_NPROC"],
            nofile=cfg["MACHINA_EMBED_NOFILE"],
        ),
        batch_max=cfg["MACHINA_EMBED_BATCH_MAX"],
        breaker_failures=cfg["MACHINA_EMBED_BREAKER_FAILURES"],
        breaker_cooldown_ms=cfg["MACHINA_EMBED_BREAKER_COOLDOWN_MS"],
        sandbox=verify(cfg, resolve_policy(cfg)),
    )
    return CommandProvider(spec, cfg["MACHINA_GPU_DIM"], hidden=cfg["MACHINA_ROOT"])


def build_engine(cfg: Config) -> EmbedEngine:
    """The engine for the configured root: history under ``state/``, provider and limits from MACHINA_EMBED_*."""
    root = open_root(cfg)
    ensure_dir(root.state)
    sweep_temps(root.state)  # half-written history files of a killed predecessor
    history = SuccessHistory(root.state, keep=cfg["MACHINA_EMBED_HISTORY"], fsync=cfg["MACHINA_WAL_FSYNC"])
    return EmbedEngine(EngineSettings.from_config(cfg), history, command_provider(cfg))

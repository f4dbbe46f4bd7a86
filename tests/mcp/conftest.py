"""Fixtures for the MCP bridge: a real machina-toolhost with an mcp_servers.json, real servers on stdio and HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from machina.testing.toolhost import RunningToolhost, running_toolhost

PYTHON = sys.executable
PYTHON_EXE = os.path.basename(os.path.realpath(sys.executable))  # what the allow-list must name
SDK_SERVER = {"command": PYTHON, "args": ["-m", "machina.testing.mcp_server"]}
StartToolhost = Callable[..., RunningToolhost]
LEGACY_SERVER = {"command": PYTHON, "args": ["-m", "machina.testing.mcp_legacy_server"]}


def write_config(path: Path, servers: dict[str, Any]) -> str:
    path.write_text(json.dumps({"mcpServers": servers}))
    return str(path)


@pytest.fixture
def mcp_toolhost(machina_root: Path, tmp_path: Path) -> Iterator[Callable[..., RunningToolhost]]:
    """``mcp_toolhost(servers, **env)``: a toolhost serving ``servers`` (the mcpServers object), connected."""
    stack = contextlib.ExitStack()

    def start(servers: dict[str, Any], **env: str) -> RunningToolhost:
        config = write_config(tmp_path / "mcp_servers.json", servers)
        settings = {
            "MACHINA_MCP_CONFIG": config,
            "MACHINA_MCP_ALLOWED_COMMANDS": PYTHON_EXE,
            "MACHINA_PERMISSION_OVERRIDES": "AID.MCP.*=allow",
            **env,
        }
        host = stack.enter_context(running_toolhost(str(machina_root), env=settings))
        host.client.mcp_reload()  # returns once every server is connected (or failed)
        return host

    with stack:
        yield start


def server_status(host: RunningToolhost, name: str) -> dict[str, Any]:
    servers = {s["name"]: s for s in host.client.mcp_status()["servers"]}
    return servers[name]

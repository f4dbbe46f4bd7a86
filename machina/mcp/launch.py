"""Which stdio MCP server may start, and how: allow-listed command, minimal environment, the sandbox.

* The command is looked up like the shell tool's (a name on the sandbox's PATH, or an absolute path) and
  its *canonical* basename (every symlink followed) must be in MACHINA_MCP_ALLOWED_COMMANDS: a link named
  ``node`` that points at ``bash`` is ``bash``.  The path as configured is what runs, so that a
  virtualenv's interpreter keeps its packages.
* The environment is the sandbox's base (PATH, LANG, HOME and TMPDIR on the private /tmp) plus the
  server's ``env`` from mcp_servers.json, placeholders filled in; nothing else of the toolhost's
  environment reaches it (AGENT.md fault 6: stdio servers inherited every secret).
* It runs like every tool process (machina.sandbox.launch.prepare): bubblewrap namespaces, seccomp,
  rlimits, the tool uid, no network unless the server's ``"network": true``.  Visible read-only besides
  the system directories: the command's installation prefix (the directory above its ``bin/``), ``cwd``
  and absolute paths among the arguments; the toolhost's own interpreter and Machina when the command is
  that interpreter.  The root, its state and the suite's configuration are not visible.
* Long-running: no CPU-time or address-space limit (the wall clock of each call is
  MACHINA_MCP_TOOL_TIMEOUT_MS); file size, open files and processes stay limited as for tools.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from machina.config.mcp_servers import StdioServer, expand
from machina.proc import Rlimits
from machina.sandbox.launch import SANDBOX_PATH, SANDBOX_TMP, Launch, prepare, python_paths
from machina.sandbox.policy import SandboxPolicy

SYSTEM_PREFIXES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/")


class LaunchRefused(Exception):
    """This server may not start (not allow-listed, missing, a placeholder unset)."""


@dataclass(frozen=True)
class StdioSettings:
    allowed: tuple[str, ...]
    rlimits: Rlimits


def resolve_command(command: str, allowed: tuple[str, ...]) -> str:
    """The command's path if its canonical basename is allowed; LaunchRefused otherwise."""
    if "/" in command:
        if not os.path.isabs(command):
            raise LaunchRefused(f"command {command!r}: give a program name or an absolute path")
        path = command
    else:
        found = shutil.which(command, path=SANDBOX_PATH)
        if found is None:
            raise LaunchRefused(f"command {command!r}: no such program on {SANDBOX_PATH}")
        path = found
    canonical = os.path.realpath(path)
    base = os.path.basename(canonical)
    if base not in allowed:
        shown = command if canonical == command else f"{command} -> {canonical}"
        raise LaunchRefused(f"command {shown}: {base!r} is not in MACHINA_MCP_ALLOWED_COMMANDS")
    if not (os.path.isfile(canonical) and os.access(canonical, os.X_OK)):
        raise LaunchRefused(f"command {canonical}: not an executable file")
    return path


def server_environment(server: StdioServer, environ: Mapping[str, str]) -> dict[str, str]:
    """The server's own ``env`` only, placeholders filled in (the sandbox adds PATH, LANG, HOME, TMPDIR)."""
    return {key: expand(value, environ, f"{server.name}.env.{key}") for key, value in server.env}


def readable_paths(path: str, cwd: str | None, args: list[str]) -> list[str]:
    paths = []
    prefix = os.path.dirname(os.path.dirname(path))
    if prefix not in SYSTEM_PREFIXES:
        paths.append(prefix)
    if os.path.realpath(path) == os.path.realpath(sys.executable):
        paths += python_paths()
    if cwd:
        paths.append(cwd)
    paths += [arg for arg in args if os.path.isabs(arg) and os.path.exists(arg)]
    return paths


def prepare_stdio(
    server: StdioServer, policy: SandboxPolicy, settings: StdioSettings, environ: Mapping[str, str]
) -> Launch:
    """The sandboxed launch of ``server``; LaunchRefused (or McpConfigError for a placeholder) when it may not."""
    path = resolve_command(server.command, settings.allowed)
    args = [expand(arg, environ, f"{server.name}.args[{i}]") for i, arg in enumerate(server.args)]
    env = server_environment(server, environ)
    # Without bubblewrap a tool runs in a private scratch directory; cwd needs the mount namespace.
    cwd = server.cwd if (server.cwd and policy.bwrap) else SANDBOX_TMP
    return prepare(
        policy,
        [path, *args],
        network=server.network,
        ro_paths=readable_paths(path, server.cwd, args),
        cwd=cwd,
        env=env,
        rlimits=settings.rlimits,
    )

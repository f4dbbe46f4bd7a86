"""``mcp_servers.json``: the operator's list of MCP servers (MACHINA_MCP_CONFIG), read and validated.

The common ``mcpServers`` shape::

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@scope/server"], "env": {"TOKEN": "${FILES_TOKEN}"},
                  "cwd": "/srv/files", "network": false, "disabled": false},
        "search": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${SEARCH_KEY}"},
                   "transport": "streamable-http"}}}

A server has either ``command`` (stdio: ``args``, ``env``, ``cwd``, ``network``) or ``url`` (``headers``,
``transport``: ``streamable-http``, the default, or ``sse``); ``disabled`` turns it off.  Secrets are
``${ENV_VAR}`` placeholders, filled from the toolhost's environment (and the env file) only when the server
starts; a literal secret is refused with the same classifier as ``security_guardrails``.  Errors name the
file, the JSON path and what was expected, never a value (it may be a secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from machina.audit.canonical import loads_strict
from machina.config import ConfigError
from machina.config.secret_text import classify

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
PLACEHOLDER_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
URL = re.compile(r"https?://[^\s@/?#]+(/[^\s#]*)?", re.IGNORECASE)
HTTP_TRANSPORTS = {"streamable-http": "streamable-http", "http": "streamable-http", "sse": "sse"}
STDIO_KEYS = frozenset({"command", "args", "env", "cwd", "network", "disabled", "type"})
HTTP_KEYS = frozenset({"url", "headers", "transport", "disabled", "type"})
MAX_FILE_BYTES = 1024 * 1024


class McpConfigError(ConfigError):
    """mcp_servers.json is missing pieces, malformed, or holds a plain-text secret (exit 78)."""


@dataclass(frozen=True)
class StdioServer:
    name: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # values may hold ${ENV_VAR} placeholders
    cwd: str | None = None
    network: bool = False
    disabled: bool = False
    kind: str = "stdio"


@dataclass(frozen=True)
class HttpServer:
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()  # values may hold ${ENV_VAR} placeholders
    transport: str = "streamable-http"
    disabled: bool = False
    kind: str = "http"


Server = StdioServer | HttpServer


@dataclass(frozen=True)
class McpServers:
    path: str
    servers: dict[str, Server]
    exists: bool = True


def read_mcp_servers(path: str) -> McpServers:
    """The servers of ``path``; a missing file means none.  Raises McpConfigError for anything malformed."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return McpServers(path, {}, exists=False)
    except OSError as exc:
        raise McpConfigError(f"MACHINA_MCP_CONFIG={path!r}: cannot read it: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise McpConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes; expected a short JSON file")
    return parse_mcp_servers(raw, path)


def parse_mcp_servers(raw: str | bytes, origin: str) -> McpServers:
    try:
        doc = loads_strict(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"{origin}: not valid JSON ({_short(exc)})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("mcpServers"), dict):
        raise McpConfigError(f'{origin}: expected a JSON object {{"mcpServers": {{NAME: {{...}}, ...}}}}')
    extra = sorted(set(doc) - {"mcpServers"})
    if extra:
        raise McpConfigError(f"{origin}: unknown top-level key(s) {', '.join(extra)}; only mcpServers is read")
    errors: list[str] = []
    servers: dict[str, Server] = {}
    for name, entry in doc["mcpServers"].items():
        try:
            servers[name] = _server(name, entry)
        except ValueError as exc:
            errors.append(f"{origin}: $.mcpServers.{name}: {exc}")
    if errors:
        raise McpConfigError("\n".join(errors))
    return McpServers(origin, servers)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _server(name: str, entry: Any) -> Server:
    if not SERVER_NAME.fullmatch(name):
        raise ValueError("a server name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if not isinstance(entry, dict):
        raise ValueError("expected an object with command (stdio) or url (HTTP)")
    if ("command" in entry) == ("url" in entry):
        raise ValueError("expected exactly one of command (a stdio server) or url (an HTTP server)")
    _refuse_literal_secrets(entry)
    disabled = _bool(entry, "disabled")
    if "command" in entry:
        _only(entry, STDIO_KEYS)
        if entry.get("type", "stdio") != "stdio":
            raise ValueError('type: a server with command is "stdio"')
        command = entry["command"]
        if not isinstance(command, str) or not command.strip() or "\x00" in command:
            raise ValueError("command: expected a non-empty string (an executable name or path)")
        cwd = entry.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not os.path.isabs(cwd)):
            raise ValueError("cwd: expected an absolute path")
        return StdioServer(
            name,
            command,
            tuple(_strings(entry, "args")),
            tuple(_mapping(entry, "env", ENV_NAME, "environment variable names").items()),
            cwd,
            network=_bool(entry, "network"),
            disabled=disabled,
        )
    _only(entry, HTTP_KEYS)
    url = entry["url"]
    if not isinstance(url, str) or not URL.fullmatch(url):
        raise ValueError("url: expected an http:// or https:// URL without credentials (put them in headers)")
    transport = entry.get("transport", entry.get("type", "streamable-http"))
    if transport not in HTTP_TRANSPORTS:
        raise ValueError(f"transport: expected one of {', '.join(HTTP_TRANSPORTS)}")
    headers = _mapping(entry, "headers", HEADER_NAME, "HTTP header names")
    return HttpServer(name, url, tuple(headers.items()), HTTP_TRANSPORTS[transport], disabled)


def _refuse_literal_secrets(entry: dict[str, Any]) -> None:
    for section in ("env", "headers"):
        for key, value in (entry.get(section) or {}).items() if isinstance(entry.get(section), dict) else ():
            kind = isinstance(value, str) and classify(str(key), value)
            if kind:
                raise ValueError(f"{section}.{key}: {kind}; write it as a ${{ENV_VAR}} placeholder")
    for index, arg in enumerate(entry.get("args") or []) if isinstance(entry.get("args"), list) else ():
        kind = isinstance(arg, str) and classify("", arg)
        if kind:
            raise ValueError(f"args[{index}]: {kind}; write it as a ${{ENV_VAR}} placeholder")


def _only(entry: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}")


def _bool(entry: dict[str, Any], key: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false")
    return value


def _strings(entry: dict[str, Any], key: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and "\x00" not in v for v in value):
        raise ValueError(f"{key}: expected a list of strings")
    return value


def _mapping(entry: dict[str, Any], key: str, names: re.Pattern[str], what: str) -> dict[str, str]:
    value = entry.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) and "\x00" not in v for v in value.values()):
        raise ValueError(f"{key}: expected an object of string values")
    bad = [k for k in value if not names.fullmatch(k)]
    if bad:
        raise ValueError(f"{key}: {', '.join(sorted(bad))}: expected {what}")
    return value


def expand(text: str, environ: Mapping[str, str], where: str) -> str:
    """``text`` with every ``${NAME}`` replaced from ``environ``; a missing one is an error naming it."""
    missing = [name for name in PLACEHOLDER_REF.findall(text) if not environ.get(name)]
    if missing:
        raise McpConfigError(f"{where} needs ${{{missing[0]}}}, which is not set in the toolhost's environment")
    return PLACEHOLDER_REF.sub(lambda m: environ[m.group(1)], text)


def placeholder_environment(env_file: str | None) -> dict[str, str]:
    """Where ``${ENV_VAR}`` placeholders are looked up: the env file's entries, the environment over them.

    Under systemd the suite's secrets arrive through EnvironmentFile (so in the environment); an operator
    running the toolhost by hand may keep them only in MACHINA_ENV_FILE.
    """
    from machina.config.envfile import EnvFileError, read_env_file

    values: dict[str, str] = {}
    if env_file and os.path.isfile(env_file):
        try:
            values = {key: value for key, value, _line in read_env_file(env_file)}
        except (EnvFileError, OSError):
            values = {}  # the configuration loader has already reported a damaged env file
    values.update(os.environ)
    return values

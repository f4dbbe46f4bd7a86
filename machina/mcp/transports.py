"""How the connection's owner opens each kind of server: the SDK's HTTP transports, our sandboxed stdio.

Placeholders (``${ENV_VAR}``) are filled in here, at each start, from the toolhost's environment; the
values stay in this process (HTTP headers) or go to that one server's environment (stdio ``env``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx2
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from machina.config.mcp_servers import HttpServer, StdioServer, expand
from machina.mcp.launch import StdioSettings, prepare_stdio
from machina.mcp.transport import sandboxed_stdio
from machina.sandbox.policy import SandboxPolicy

Opener = Callable[[Callable[[str], None]], Any]


def http_opener(server: HttpServer, environ: Mapping[str, str], max_message_bytes: int) -> Opener:
    headers = {key: expand(value, environ, f"{server.name}.headers.{key}") for key, value in server.headers}

    @contextlib.asynccontextmanager
    async def open_http(on_lost: Callable[[str], None]) -> AsyncIterator[Any]:
        if server.transport == "sse":
            async with sse_client(server.url, headers=headers) as streams:
                yield streams
            return
        timeout = httpx2.Timeout(30.0, read=300.0)
        hooks = {"response": [size_guard(max_message_bytes)]}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http,
            streamable_http_client(server.url, http_client=http, max_sse_event_size=max_message_bytes) as streams,
        ):
            yield streams

    return open_http


class ResponseTooLarge(Exception):
    pass


def size_guard(max_bytes: int) -> Callable[[httpx2.Response], Any]:
    """A response hook refusing a declared body over ``max_bytes`` before it is read (an SSE stream is
    bounded per event by the SDK's max_sse_event_size instead)."""

    async def refuse_oversized(response: httpx2.Response) -> None:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"the server answered {declared} bytes, more than {max_bytes}")

    return refuse_oversized


def stdio_opener(
    server: StdioServer,
    policy: SandboxPolicy,
    settings: StdioSettings,
    environ: Mapping[str, str],
    max_message_bytes: int,
) -> Opener:
    def open_stdio(on_lost: Callable[[str], None]) -> Any:
        launch = prepare_stdio(server, policy, settings, environ)
        return sandboxed_stdio(launch, name=server.name, max_message_bytes=max_message_bytes, on_lost=on_lost)

    return open_stdio

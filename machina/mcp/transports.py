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
        bounded = BoundedTransport(httpx2.AsyncHTTPTransport(), max_message_bytes)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout, transport=bounded) as http,
            streamable_http_client(server.url, http_client=http, max_sse_event_size=max_message_bytes) as streams,
        ):
            yield streams

    return open_http


class ResponseTooLarge(Exception):
    pass


def refuse_declared_oversize(response: httpx2.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"the server answered {declared} bytes, more than {max_bytes}")


class BoundedTransport(httpx2.AsyncBaseTransport):
    """Every response body at most ``max_bytes``: a declared Content-Length over it is refused before a byte
    is read; a body without one (chunked) is counted as it arrives and refused when it passes the cap, so a
    hostile server cannot make the toolhost buffer an unbounded answer.  An event stream is many messages,
    not one body: the SDK bounds each event instead (max_sse_event_size)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, max_bytes: int) -> None:
        self.inner, self.max_bytes = inner, max_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        try:
            refuse_declared_oversize(response, self.max_bytes)
        except ResponseTooLarge:
            await response.aclose()
            raise
        stream = response.stream
        if isinstance(stream, httpx2.AsyncByteStream):
            response.stream = _CountedStream(stream, self.max_bytes)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CountedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, max_bytes: int) -> None:
        self.inner, self.max_bytes = inner, max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.max_bytes:
                raise ResponseTooLarge(f"the server's answer passed {self.max_bytes} bytes (no length declared)")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


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

"""One MCP server connection, owned from start to end by one thread and its event loop.

The SDK wants a connection entered and exited in the same task (STYLE.md); the toolhost serves each peer
on a thread of its own.  So each server gets an owner thread running ``asyncio.run``: its main task enters
the transport and the SDK's ``Client`` (``mode="auto"``: the newer stateless ``server/discover`` when the
server speaks it, else the ``initialize`` handshake), lists the tools, then waits until it is told to
close or the server goes away.  Work from other threads reaches the loop with
``asyncio.run_coroutine_threadsafe`` (the loop's own queue) and waits on the returned future with a
deadline; a call past it is cancelled inside the loop (the SDK tells the server) and reported as a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import anyio
import mcp_types
from mcp import Client

log = logging.getLogger(__name__)

STARTING, READY, FAILED, CLOSED = "starting", "ready", "failed", "closed"
MAX_PAGES = 50
MAX_TOOLS = 1000
JOIN_S = 10.0
CLIENT_INFO = mcp_types.Implementation(name="machina-toolhost", version="1")

T = TypeVar("T")
OpenTransport = Callable[[Callable[[str], None]], AbstractAsyncContextManager[Any]]


class NotConnected(Exception):
    """The server is not (or no longer) connected."""


def describe(exc: BaseException) -> str:
    """One short line for an exception, the innermost of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def list_all(client: Client) -> list[dict[str, Any]]:
    """Every tool the server lists, as plain JSON (``name``, ``description``, ``inputSchema``, ...)."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools += [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in page.tools]
        cursor = page.next_cursor
        if cursor is None or len(tools) > MAX_TOOLS:
            break
    return tools[:MAX_TOOLS]


class Connection:
    def __init__(self, name: str, open_transport: OpenTransport, *, connect_timeout_s: float) -> None:
        self.name = name
        self.open_transport = open_transport
        self.connect_timeout_s = connect_timeout_s
        self.state = STARTING
        self.error = ""
        self.tools: list[dict[str, Any]] = []
        self.protocol_version = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._client: Client | None = None
        self._lost_reason = ""
        self._thread = threading.Thread(target=self._main, name=f"mcp-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once connected; False when it failed or is still starting after ``timeout_s``."""
        self._ready.wait(timeout_s)
        return self.state == READY

    def close(self) -> None:
        """Ask the owner to close the connection (the server is stopped) and wait for it."""
        if self.state != FAILED:
            self.state = CLOSED
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(wake.set)
        if self._thread.is_alive():
            self._thread.join(JOIN_S)

    def run(self, work: Callable[[Client], Awaitable[T]], timeout_s: float) -> T:
        """Run ``work(client)`` on the owner's loop and wait at most ``timeout_s`` for it.

        Raises TimeoutError (the work is cancelled), NotConnected, or what the work raised.
        """
        loop, client = self._loop, self._client
        if self.state != READY or loop is None or client is None:
            raise NotConnected(self.error or f"server {self.name} is {self.state}")

        async def guarded() -> T:
            return await work(client)

        try:
            future = asyncio.run_coroutine_threadsafe(guarded(), loop)
        except RuntimeError:  # the loop closed between the check and the submit
            raise NotConnected(self.error or f"server {self.name} went away") from None
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout_s:g}s") from None
        except concurrent.futures.CancelledError:
            raise NotConnected(self.error or f"the connection to {self.name} ended during the call") from None

    # --- the owner thread ---------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._own())
        except BaseException as exc:  # the owner must never take the toolhost down
            self._fail(describe(exc))
        finally:
            self._client = None
            if self.state == READY:
                self._fail("the connection ended")
            self._ready.set()

    async def _own(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            # One scope around the whole connection (scopes must nest with the SDK's task groups): its
            # deadline bounds the start, then is lifted while the connection serves.
            with anyio.CancelScope() as scope:
                scope.deadline = anyio.current_time() + self.connect_timeout_s
                client = Client(self.open_transport(self._lost), mode="auto", cache=None, client_info=CLIENT_INFO)
                async with client:
                    self.tools = await list_all(client)
                    scope.deadline = math.inf
                    self._serve(client)
                    await self._wake.wait()
            if scope.cancelled_caught:
                self._fail(f"no handshake and tool list within {self.connect_timeout_s:g}s")
        except Exception as exc:
            self._fail(describe(exc))

    def _serve(self, client: Client) -> None:
        self.protocol_version = str(client.protocol_version)
        self._client = client
        if self.state == STARTING:
            self.state = READY
            log.info("mcp server %s connected (protocol %s)", self.name, self.protocol_version)
        self._ready.set()

    def _lost(self, reason: str) -> None:
        """Called on the owner's loop by the transport when the server's output ends."""
        self._lost_reason = self._lost_reason or reason
        if self.state == READY:
            self._fail(reason)
        if self._wake is not None:
            self._wake.set()

    def _fail(self, reason: str) -> None:
        if self.state == CLOSED:
            return
        if self.state != FAILED:
            log.warning("mcp server %s failed: %s", self.name, reason)
        self.state, self.error = FAILED, self.error or reason

"""uvicorn's httptools protocol with the limits uvicorn lacks: a header timeout, a body timeout and a cap on
the size of the request head.

uvicorn parses HTTP with httptools (llhttp) and keeps idle keep-alive connections in check
(``timeout_keep_alive``), but it has no deadline on *receiving* a request: its keep-alive timer is
cancelled by every byte received and is not armed at all on a fresh connection, so a client that connects
and says nothing, or trickles its headers or its body a byte at a time, holds a connection for ever
(encode/uvicorn#157, still open).  Nor does it bound the request head with httptools.  This subclass adds,
around uvicorn's own parser callbacks:

* a **header deadline**, armed when a connection opens and when a request begins, disarmed when the head
  is complete: a connection that has not delivered a whole request head within ``header_timeout`` is
  answered 408 (or closed without a word if it sent nothing at all);
* a **body deadline**, armed when the head is complete, disarmed when the message is complete: a body
  still arriving after ``body_timeout`` gets 408 (unless a response already started) and the connection
  is closed; the application sees ``http.disconnect``;
* a **head size cap**: request line plus headers over ``max_header_bytes`` get 431 and a closed connection.

Everything else (parsing, keep-alive, pipelining, flow control, graceful shutdown) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


def _canned(status: bytes, text: bytes) -> bytes:
    body = b'{"ok":false,"error":"' + text + b'"}'
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


REQUEST_TIMEOUT = _canned(b"408 Request Timeout", b"request not received in time")
HEAD_TOO_LARGE = _canned(b"431 Request Header Fields Too Large", b"request line and headers too large")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


class _HeadTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set ``limits`` on a subclass (:func:`guarded_protocol`); uvicorn instantiates one per connection."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_request = False
        self._head_too_large = False

    # --- connection ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("header", self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- parser callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_request = True
        self._head_bytes = 0
        if self._deadline is None:
            self._arm("header", self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm("body", self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_request = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        log.info("request head over %d bytes from %s: 431", self.limits.max_header_bytes, _peer(self.client))
        self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()

    # --- deadlines -------------------------------------------------------------------------------------

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn answers through send_400_response

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        answer = self._in_request and (phase == "header" or (cycle is not None and not cycle.response_started))
        if answer:
            log.info("%s of a request from %s not received in time: 408", phase, _peer(self.client))
            self.transport.write(REQUEST_TIMEOUT)
        if phase == "body" and cycle is not None and not cycle.response_complete:
            # What uvicorn does when a client goes away: the application's receive() says http.disconnect
            # and its send() becomes a no-op, so it cannot write a second response after ours.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class carrying ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("MachinaHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "the unix socket"

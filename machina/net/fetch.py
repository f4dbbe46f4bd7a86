"""The pinned GET behind AID.NET.HTTP_GET.v1.

``http_get`` checks the URL (``machina.net.ssrf.check_url``: one DNS resolution, every address checked) and
then connects with requests to ``Target.pinned_ip`` and nowhere else.  The connection pool is built for the
pinned address, not from the request URL, so nothing looks the name up a second time (DNS rebinding gets no
second answer to swap in); the ``Host`` header, the TLS server name (SNI) and certificate verification all
use the original host name.  Redirects are never followed: a 3xx comes back as it is.  Proxies, ``.netrc``
and CA settings from the environment are ignored.

The timeout covers the whole request: name resolution, connect, TLS handshake, headers and body.  A
watchdog shuts the sockets down when it expires, so a server that trickles one byte at a time cannot stretch
a request past it.  The body is read up to ``max_bytes`` (one byte more tells whether it was cut) and
decoded with the charset the server declared, else UTF-8, with replacement characters for bad bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from email.message import Message
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from machina.exitcodes import ExitCode, MachinaError
from machina.net.ssrf import Resolver, Target, check_url, system_resolver

USER_AGENT = "machina-http-get/1"
_READ_CHUNK_BYTES = 64 * 1024


class FetchError(MachinaError):
    """The fetch was allowed but failed (connection refused, TLS error, timeout ...)."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message, ExitCode.TEMPFAIL if timed_out else None)
        self.timed_out = timed_out


def http_get(
    url: str,
    *,
    timeout_ms: int,
    max_bytes: int,
    allowed_hosts: tuple[str, ...],
    default_deny: bool,
    resolver: Resolver = system_resolver,
) -> dict[str, Any]:
    """Check ``url`` and GET it from the pinned address.

    Returns ``{"status", "headers", "body", "truncated", "url", "ip"}``; raises ``SsrfRefused`` when the URL
    must not be fetched and ``FetchError`` when the fetch fails.
    """
    deadline = _Deadline(timeout_ms)
    target = check_url(
        url,
        allowed_hosts=allowed_hosts,
        default_deny=default_deny,
        resolver=_resolver_within(resolver, deadline),
    )
    return _fetch(target, deadline, max_bytes)


def fetch_pinned(target: Target, *, timeout_ms: int, max_bytes: int, ca_bundle: str | None = None) -> dict[str, Any]:
    """GET a ``Target`` that ``check_url`` returned (``http_get`` minus the check).

    The caller vouches for ``target``: pass only what ``check_url`` (or, for a URL whose host is operator
    configuration, ``configured_target``) returned, never a Target built from input.  (The tests use it to
    reach servers on loopback, which ``check_url`` rightly refuses.)
    ``ca_bundle`` replaces the system CA bundle for certificate verification (tests use their own CA);
    verification itself is never turned off.
    """
    return _fetch(target, _Deadline(timeout_ms), max_bytes, ca_bundle)


def _fetch(target: Target, deadline: _Deadline, max_bytes: int, ca_bundle: str | None = None) -> dict[str, Any]:
    seconds = deadline.remaining()
    if seconds <= 0:
        raise deadline.error(target.url)
    with _Watchdog(seconds) as watchdog, requests.Session() as session:
        session.trust_env = False  # no proxy, .netrc or CA bundle from the environment
        adapter = _PinnedAdapter(target, watchdog)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.get(
                target.url,
                headers=_request_headers(target),
                stream=True,
                allow_redirects=False,
                timeout=(seconds, seconds),  # per operation; the watchdog bounds the total
                verify=ca_bundle or True,
            )
            with response:
                raw, truncated = _read_capped(response, max_bytes)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if watchdog.expired:
                raise deadline.error(target.url) from None
            raise FetchError(f"GET {target.url} (at {target.pinned_ip}) failed: {_describe(exc)}") from None
        if watchdog.expired:  # a body without a length, cut by the watchdog, ends like a complete one
            raise deadline.error(target.url)
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(raw, response.headers.get("Content-Type", "")),
        "truncated": truncated,
        "url": target.url,
        "ip": target.pinned_ip,
    }


def _request_headers(target: Target) -> dict[str, str]:
    return {
        "Host": target.host_header,
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }


def _read_capped(response: requests.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes + 1`` bytes: enough to know whether the body was longer, never more."""
    limit = max_bytes + 1
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = response.raw.read(min(_READ_CHUNK_BYTES, limit - size), decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:max_bytes], size > max_bytes


def _decode(body: bytes, content_type: str) -> str:
    message = Message()
    message["Content-Type"] = content_type
    charset = message.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except (LookupError, UnicodeError):  # unknown or non-text codec named by the server
        return body.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    """The innermost cause, in one line (requests wraps urllib3 errors wrapping socket errors)."""
    while True:
        inner = getattr(exc, "reason", None)
        if isinstance(inner, BaseException):
            exc = inner
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            return f"{type(exc).__name__}: {exc}".replace("\n", " ")


# --- the whole-request deadline --------------------------------------------------------------------------


class _Deadline:
    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self._ends = time.monotonic() + timeout_ms / 1000

    def remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def error(self, what: str) -> FetchError:
        return FetchError(f"GET {what} timed out after {self.timeout_ms} ms", timed_out=True)


def _resolver_within(resolver: Resolver, deadline: _Deadline) -> Resolver:
    """``resolver`` bounded by the deadline: getaddrinfo cannot be interrupted, so it runs in a thread."""

    def resolve(host: str, port: int) -> list[str]:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["answer"] = list(resolver(host, port))
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run, name="machina-net-resolve", daemon=True)
        worker.start()
        worker.join(deadline.remaining())
        if worker.is_alive():
            raise deadline.error(f"{host} (resolving the name)")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["answer"]

    return resolve


class _Watchdog:
    """Shuts down every socket of the request when the deadline passes, whatever the request is doing."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in another thread; close() would not


# --- requests plumbing: a pool bound to the pinned address ----------------------------------------------


class _WatchedConnection:
    """Mixed into urllib3's connection classes: hands each new socket to the request's watchdog."""

    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def _new_conn(self) -> socket.socket:
        # The raw TCP socket, before any TLS handshake, so the watchdog covers the handshake too.
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        self._watchdog.watch(sock)
        return sock


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _PinnedAdapter(HTTPAdapter):
    """Every request through this adapter goes to the pinned address, whatever host its URL names."""

    def __init__(self, target: Target, watchdog: _Watchdog) -> None:
        super().__init__(max_retries=0)
        self._pool: HTTPConnectionPool
        if target.scheme == "https":
            self._pool = _PinnedHTTPSPool(
                target.pinned_ip,
                target.port,
                maxsize=1,
                server_hostname=target.host,  # SNI
                assert_hostname=target.host,  # the certificate must name the host, not the address
                watchdog=watchdog,
            )
        else:
            self._pool = _PinnedHTTPPool(target.pinned_ip, target.port, maxsize=1, watchdog=watchdog)

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        return self._pool

    def close(self) -> None:
        super().close()
        self._pool.close()

"""The HTTP API of DESIGN.md section 4 as a small raw ASGI application (no framework: one route table).

=====================  ======  ==========================================================================
path                   auth    answer
=====================  ======  ==========================================================================
``POST /enqueue``      yes     200 ``{"ok":true,"queued":name,"request_id":...[,"deduplicated":true]}``;
                               400 bad request, 401/403 auth, 409 request_id reused with another body,
                               413 body over MACHINA_API_MAX_BODY_BYTES, 429 rate limit, 503 queue not
                               writable (nothing was queued), 500 naming the job when it was queued but
                               its fsync failed and it could not be taken back (do not resend it)
``GET /health``        no      200 ``{"ok":true}``
``GET /stats``         yes     200 ``{"ok":true,"sizes":{...},"counters":{...},"jobs":{...}}``
``GET /metrics``       yes*    Prometheus text (* no auth with MACHINA_METRICS_PUBLIC=1)
``GET /jobs/<name>``   yes     200 ``{"ok":true,"name":...,"state":...,"results":[...]}``, 404
=====================  ======  ==========================================================================

Every error is ``{"ok":false,"error":"<what went wrong>"}``.  An answer given before the request body was
read closes the connection, so a client cannot keep the server reading a body nobody wants.

Jobs are written by :class:`~machina.enqueued.batching.JobWriter`: every request waiting is committed in
one batch (one WAL group commit).  A job is answered "queued" only once its batch was written, that is once
it is durable under MACHINA_WAL_FSYNC.  Other queue calls (stats, job lookups) block too: they run in a
thread pool.

Every log line about a request carries ``request_id``: the client's ``request_id`` once the body is
parsed, before that (and for requests without one) this daemon's own id for the request, ``h-...``,
which is also sent back in the ``X-Request-Id`` response header.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST

from machina import wirejson
from machina.enqueued.auth import Authenticator, AuthFailure, PendingSignature
from machina.enqueued.batching import JobWriter, WriterClosed
from machina.enqueued.metrics import Metrics
from machina.enqueued.ratelimit import RateLimiter, client_key
from machina.log import fields, log_context, redact
from machina.metrics.figures import read_all
from machina.queue import (
    BaseQueue,
    DedupConflict,
    DedupPending,
    InvalidRequest,
    QueuedNotDurable,
    QueueError,
    QueueNotWritable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON_TYPE = b"application/json"
#: Seconds a client should wait before retrying when the queue cannot take jobs.
NOT_WRITABLE_RETRY_S = 5


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []
        self.request_id = request_id  #: the client's request_id, when known (for the log line)


class ClientGone(Exception):
    """The client closed the connection (or timed out) before its request was read."""


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON_TYPE,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_response(status: int, doc: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, wirejson.dumps(doc), headers=headers)


class Exchange:
    """One request as the handlers see it."""

    __slots__ = ("body_read", "client", "declares_body", "headers", "method", "path", "receive", "rid", "scope")

    def __init__(self, scope: Scope, receive: Receive, rid: str) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.client: tuple[str, int] | None = scope.get("client")
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.rid = rid
        self.body_read = False
        length = self.headers.get(b"content-length")
        self.declares_body = b"transfer-encoding" in self.headers or (length is not None and length.strip() != b"0")

    @property
    def target(self) -> str:
        """The path with its query, as the client sent it (what an HMAC signature covers)."""
        raw = self.scope.get("raw_path") or self.path.encode()
        query = self.scope.get("query_string") or b""
        return (raw + b"?" + query if query else raw).decode("latin-1")


class EnqueueApp:
    def __init__(
        self,
        *,
        queue: BaseQueue,
        state_dir: str,
        auth: Authenticator,
        limiter: RateLimiter,
        enqueue_limiter: RateLimiter,
        metrics: Metrics,
        executor: Executor,
        writer: JobWriter,
        max_body_bytes: int,
        metrics_public: bool,
    ) -> None:
        self.queue = queue
        self.state_dir = state_dir
        self.auth = auth
        self.limiter = limiter
        self.enqueue_limiter = enqueue_limiter
        self.metrics = metrics
        self.executor = executor
        self.writer = writer
        self.max_body_bytes = max_body_bytes
        self.metrics_public = metrics_public
        self._ids = itertools.count(1)
        self._id_prefix = "h-" + secrets.token_hex(3) + "-"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs with lifespan and websockets off
        exchange = Exchange(scope, receive, f"{self._id_prefix}{next(self._ids):x}")
        endpoint, handler = self._route(exchange)
        with log_context(request_id=exchange.rid):
            try:
                response = await handler(exchange)
            except HttpError as exc:
                response = json_response(exc.status, {"ok": False, "error": redact(exc.message)}, exc.headers)
                with log_context(request_id=exc.request_id):
                    self._log_refusal(exchange, exc.status, exc.message)
            except ClientGone:
                self.metrics.count_request(endpoint, 499)
                log.info("%s %s: client gone before its request was read", exchange.method, exchange.path)
                return
            except Exception:
                log.exception("%s %s: internal error", exchange.method, exchange.path)
                response = json_response(500, {"ok": False, "error": "internal error"})
            await self._send(send, exchange, response)
        self.metrics.count_request(endpoint, response.status)

    # --- routing ---------------------------------------------------------------------------------------

    def _route(self, ex: Exchange) -> tuple[str, Callable[[Exchange], Awaitable[Response]]]:
        path, method = ex.path, ex.method
        if path == "/enqueue":
            return "enqueue", self.enqueue if method == "POST" else _method_not_allowed("POST")
        if path == "/health":
            return "health", self.health if method in ("GET", "HEAD") else _method_not_allowed("GET, HEAD")
        if path == "/stats":
            return "stats", self.stats if method in ("GET", "HEAD") else _method_not_allowed("GET, HEAD")
        if path == "/metrics":
            return "metrics", self.metrics_text if method in ("GET", "HEAD") else _method_not_allowed("GET, HEAD")
        if path.startswith("/jobs/"):
            return "jobs", self.job if method in ("GET", "HEAD") else _method_not_allowed("GET, HEAD")
        return "other", _not_found

    # --- endpoints -------------------------------------------------------------------------------------

    async def enqueue(self, ex: Exchange) -> Response:
        body = await self._authorized_body(ex, enqueue=True)
        try:
            rid, result = await self.writer.submit(body)
        except WriterClosed:
            raise HttpError(503, "stopping: nothing was queued; try again later") from None
        if isinstance(result, InvalidRequest) and rid is None:
            raise HttpError(400, result.reason)
        if isinstance(result, QueueError):
            raise _refusal_error(Refused(rid, result))
        if isinstance(result, Exception):
            raise result
        if result.deduplicated:
            self.metrics.dedup_hits.inc()
        with log_context(request_id=result.request_id):
            log.debug("queued", extra=fields(job=result.name, deduplicated=result.deduplicated or None))
        return json_response(200, result.as_response(), [(b"x-request-id", (result.request_id or ex.rid).encode())])

    async def health(self, ex: Exchange) -> Response:
        return json_response(200, {"ok": True})

    async def stats(self, ex: Exchange) -> Response:
        await self._authorized_body(ex)
        doc = await self._in_thread(self._stats)
        return json_response(200, doc)

    def _stats(self) -> dict[str, Any]:
        stats = self.queue.stats()
        figures = read_all(self.state_dir)
        jobs = {"processed": figures.jobs_processed, "ok": figures.jobs_ok, "fail": figures.jobs_fail}
        return {"ok": True, **stats.as_dict(), "jobs": jobs}

    async def metrics_text(self, ex: Exchange) -> Response:
        if not self.metrics_public:
            await self._authorized_body(ex)
        text = await self._in_thread(self.metrics.render)
        return Response(200, text, CONTENT_TYPE_LATEST.encode())

    async def job(self, ex: Exchange) -> Response:
        await self._authorized_body(ex)
        name = ex.path[len("/jobs/") :]
        status = await self._in_thread(self.queue.job_status, name)
        if status is None:
            raise HttpError(404, "no such job")
        return json_response(200, {"ok": True, **status.as_dict()})

    # --- the guard every authenticated endpoint goes through -------------------------------------------

    async def _authorized_body(self, ex: Exchange, *, enqueue: bool = False) -> bytes:
        """Rate limits, then authentication; returns the body (read within its cap) once all passed.

        Rate limits come first and count every request to an authenticated endpoint, failed ones included,
        so they also slow down anyone guessing credentials.
        """
        key = client_key(ex.client)
        self._limit(self.limiter, key, "all")
        if enqueue:
            self._limit(self.enqueue_limiter, key, "enqueue")
        try:
            pending = self.auth.before_body(ex.headers)
        except AuthFailure as failure:
            raise self._auth_error(failure) from None
        body = await self._read_body(ex)
        self._verify(ex, pending, body)
        return body

    def _limit(self, limiter: RateLimiter, key: str, bucket: str) -> None:
        retry_after = limiter.retry_after(key)
        if retry_after is not None:
            self.metrics.rate_limited.labels(bucket).inc()
            raise HttpError(429, "rate limit exceeded; slow down", [(b"retry-after", str(retry_after).encode())])

    def _verify(self, ex: Exchange, pending: PendingSignature | None, body: bytes) -> None:
        try:
            self.auth.after_body(pending, ex.method, ex.target, body)
        except AuthFailure as failure:
            raise self._auth_error(failure) from None

    def _auth_error(self, failure: AuthFailure) -> HttpError:
        self.metrics.auth_failures.labels(failure.reason).inc()
        headers = [(b"www-authenticate", b'Bearer realm="machina"')] if failure.status == 401 else None
        return HttpError(failure.status, failure.message, headers)

    async def _read_body(self, ex: Exchange) -> bytes:
        """The whole body, refused with 413 as soon as it is known to exceed the cap (declared or counted)."""
        limit = self.max_body_bytes
        declared = ex.headers.get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise HttpError(413, f"request body over {limit} bytes")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await ex.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise HttpError(413, f"request body over {limit} bytes")
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        ex.body_read = True
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # --- plumbing --------------------------------------------------------------------------------------

    async def _in_thread(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in the pool, keeping the log context (request_id) of the caller."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.executor, context.run, func, *args)

    async def _send(self, send: Send, ex: Exchange, response: Response) -> None:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        if not any(name == b"x-request-id" for name, _ in response.headers):
            headers.append((b"x-request-id", ex.rid.encode()))
        if ex.declares_body and not ex.body_read:
            headers.append((b"connection", b"close"))  # do not read (or wait for) a body nobody wants
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _log_refusal(self, ex: Exchange, status: int, message: str) -> None:
        level = logging.WARNING if status >= 500 else logging.INFO
        client = f"{ex.client[0]}:{ex.client[1]}" if ex.client else "unix"
        log.log(level, "%s %s -> %d: %s", ex.method, ex.path, status, message, extra=fields(client=client))


class Refused(Exception):
    """The queue refused a valid request; carries the client's request_id for the log line."""

    def __init__(self, request_id: str | None, error: QueueError) -> None:
        super().__init__(str(error))
        self.request_id = request_id
        self.error = error


def _refusal_error(refused: Refused) -> HttpError:
    error, rid = refused.error, refused.request_id
    if isinstance(error, DedupConflict):
        return HttpError(
            409, f"request_id {error.request_id!r} was already used for a different request body", None, rid
        )
    if isinstance(error, InvalidRequest):
        return HttpError(400, error.reason, None, rid)
    if isinstance(error, QueuedNotDurable):
        log.error("enqueue: %s", error, extra=fields(request_id=rid, job=error.name))
        return HttpError(500, str(error), None, rid)
    retry = [(b"retry-after", str(NOT_WRITABLE_RETRY_S).encode())]
    if isinstance(error, DedupPending):
        return HttpError(503, str(error), retry, rid)
    if isinstance(error, QueueNotWritable):
        return HttpError(
            503, f"queue not writable ({error.errno_name}): nothing was queued; try again later", retry, rid
        )
    log.error("enqueue failed: %s", error, extra=fields(request_id=rid))
    return HttpError(503, "the queue could not take the job: nothing was queued; try again later", retry, rid)


def _method_not_allowed(allow: str) -> Callable[[Exchange], Awaitable[Response]]:
    async def handler(ex: Exchange) -> Response:
        raise HttpError(405, f"method {ex.method} not allowed here (allowed: {allow})", [(b"allow", allow.encode())])

    return handler


async def _not_found(ex: Exchange) -> Response:
    raise HttpError(404, "no such endpoint (POST /enqueue, GET /health, /stats, /metrics, /jobs/<name>)")

"""One HTTP exchange with a model server: deadline, cancel, retries and error mapping, shared by every backend.

The request runs on a helper thread and hands the response bytes to the calling thread through a queue.
The caller's thread therefore never blocks in a socket read: it notices a cancel or a passed deadline
within :data:`POLL_S` and returns at once (the helper, told to stop, drops the connection when its next read
returns; its own timeouts bound it by the same deadline).  Stream decoders and ``on_text`` callbacks run on
the calling thread.

Retries: 429, 5xx and 529 (Anthropic's "overloaded") are retried while the deadline allows, waiting what
``retry-after`` says (seconds or an HTTP date) or else an exponential backoff; a wait that would pass the
deadline is not started.  Connection refused is not retried (nothing is listening: the caller may fall
back at once).  401/403, 404 and other 4xx are not retried.  Every error names the backend and the URL,
never a header, and server-provided text in it passes through the key's redaction first.
"""

from __future__ import annotations

import email.utils
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from machina.clock import Clock
from machina.llm.errors import (
    LLMAuthError,
    LLMCancelled,
    LLMError,
    LLMNotFound,
    LLMProtocolError,
    LLMTimeout,
    LLMUnavailable,
)
from machina.log import Redactor, fields

log = logging.getLogger("machina.llm")

POLL_S = 0.05
MAX_ATTEMPTS = 6
BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 8.0
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ERROR_TEXT = 300
RETRIED = frozenset({429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class Settings:
    """What the transport needs to know about its backend (names for messages, the per-call limit)."""

    backend: str
    base_url: str
    timeout_s: float
    key_variable: str | None = None  # named in auth errors ("check OAI_COMPAT_API_KEY")
    model_variable: str | None = None  # named in 404 errors


class Sink:
    """Receives the body of a successful response on the calling thread."""

    def feed(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def start(self, content_type: str) -> None:
        """The server answered 200 with this content type; the body follows."""

    def end(self) -> None:
        """The server closed the body normally (a stream decoder checks here that it was complete)."""


class BodySink(Sink):
    """Collects a whole (non-streamed) body, refusing one larger than :data:`MAX_BODY_BYTES`."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_BODY_BYTES:
            raise LLMProtocolError(f"{self.what}: answer larger than {MAX_BODY_BYTES} bytes")
        self.parts.append(data)

    def json(self) -> Any:
        try:
            return json.loads(b"".join(self.parts))
        except (ValueError, UnicodeDecodeError):
            raise LLMProtocolError(f"{self.what}: answer is not JSON") from None


class Transport:
    def __init__(
        self,
        settings: Settings,
        headers: Mapping[str, str],
        clock: Clock,
        secrets: tuple[str, ...] = (),
        client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._redact = Redactor(secrets)
        # trust_env=False: no proxy or netrc from the environment; follow no redirects (a key must not travel).
        # verify stays on for https; for plain http there is no TLS, and skipping the CA bundle saves its load.
        self._client = client or httpx.Client(
            headers=dict(headers),
            trust_env=False,
            follow_redirects=False,
            verify=settings.base_url.startswith("https:"),
        )

    def close(self) -> None:
        self._client.close()

    def url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def effective_deadline(self, deadline: float | None) -> float:
        """The smaller of now + the per-call timeout and the caller's deadline."""
        limit = self.clock.monotonic() + self.settings.timeout_s
        return limit if deadline is None else min(limit, deadline)

    def exchange(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        sink_factory: Callable[[], Sink],
        *,
        deadline: float,
        cancel: threading.Event | None = None,
    ) -> Sink:
        """Send the request (retrying what may be retried) and feed the successful answer to a fresh sink."""
        url = self.url(path)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            _check(cancel, self.clock, deadline, self.settings, url)
            sink = sink_factory()
            outcome = self._attempt(method, url, body, sink, deadline, cancel)
            if outcome is None:
                return sink
            status, headers, text = outcome
            if status not in RETRIED or attempt == MAX_ATTEMPTS:
                raise self._status_error(status, text, url, retried=attempt > 1)
            wait = _retry_wait(headers, attempt, self.clock)
            left = deadline - self.clock.monotonic()
            if wait >= left:
                said = self._redact(_server_message(text))
                raise LLMUnavailable(
                    f"{self.settings.backend}: {url} answered {status} {_reason(status)}"
                    + (f": {said}" if said else "")
                    + f"; waiting {wait:g}s to retry would pass the deadline ({max(0.0, left):.1f}s left)"
                )
            log.info(
                "llm call will be retried",
                extra=fields(
                    backend=self.settings.backend, url=url, status=status, wait_s=f"{wait:g}", attempt=attempt
                ),
            )
            self._pause(wait, cancel, url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, seconds: float, cancel: threading.Event | None, url: str) -> None:
        """Wait between retries in short slices, so a cancel is noticed (an injected clock just advances)."""
        end = self.clock.monotonic() + seconds
        while (left := end - self.clock.monotonic()) > 0:
            if cancel is not None and cancel.is_set():
                raise LLMCancelled(f"{self.settings.backend}: call to {url} cancelled")
            self.clock.sleep(min(left, 0.1))

    def _attempt(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        sink: Sink,
        deadline: float,
        cancel: threading.Event | None,
    ) -> tuple[int, httpx.Headers, str] | None:
        """One request.  None when the body went to the sink; (status, headers, text) for an error status."""
        left = max(0.001, deadline - self.clock.monotonic())
        events: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=256)
        stop = threading.Event()
        helper = threading.Thread(
            target=self._run_request,
            args=(method, url, body, left, events, stop),
            name="machina-llm-http",
            daemon=True,
        )
        helper.start()
        try:
            return self._consume(events, sink, deadline, cancel, url)
        finally:
            stop.set()
            _drain(events)

    def _run_request(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        timeout_s: float,
        events: queue.Queue[tuple[str, Any]],
        stop: threading.Event,
    ) -> None:
        """The helper thread: do the HTTP request, post what happens as events, stop when told."""

        def post(kind: str, value: Any = None) -> bool:
            while not stop.is_set():
                try:
                    events.put((kind, value), timeout=POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with self._client.stream(method, url, json=body, timeout=httpx.Timeout(timeout_s)) as response:
                if response.status_code != 200:
                    text = response.read()[:4096].decode("utf-8", "replace")
                    post("status", (response.status_code, response.headers, text))
                    return
                if not post("start", response.headers.get("content-type", "")):
                    return
                for chunk in response.iter_bytes():
                    if not post("data", chunk):
                        return
                post("end")
        except httpx.TimeoutException:
            post("timeout")
        except httpx.ConnectError as exc:
            post("connect", exc)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            post("cut", exc)
        except httpx.HTTPError as exc:
            post("connect", exc)
        except Exception as exc:  # a bug or an odd OS error: report it to the caller rather than lose it
            post("crash", exc)

    def _consume(
        self,
        events: queue.Queue[tuple[str, Any]],
        sink: Sink,
        deadline: float,
        cancel: threading.Event | None,
        url: str,
    ) -> tuple[int, httpx.Headers, str] | None:
        name = self.settings.backend
        got_data = False
        while True:
            _check(cancel, self.clock, deadline, self.settings, url)
            try:
                kind, value = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "data":
                got_data = True
                sink.feed(value)
            elif kind == "start":
                sink.start(value)
            elif kind == "end":
                sink.end()
                return None
            elif kind == "status":
                status, headers, text = value
                return int(status), headers, text
            elif kind == "timeout":
                raise LLMTimeout(f"{name}: no complete answer from {url} before the deadline")
            elif kind == "cut":
                what = "answer" if got_data else "connection"
                raise LLMProtocolError(f"{name}: {url} cut the {what} off before it was complete")
            elif kind == "connect":
                raise LLMUnavailable(f"{name}: cannot reach {url} ({self._redact(_exc_text(value))})")
            else:
                raise LLMError(f"{name}: request to {url} failed: {self._redact(_exc_text(value))}")

    def _status_error(self, status: int, text: str, url: str, *, retried: bool) -> LLMError:
        s = self.settings
        said = self._redact(_server_message(text))
        head = f"{s.backend}: {url} answered {status} {_reason(status)}" + (f": {said}" if said else "")
        if status in (401, 403):
            hint = f" (check {s.key_variable})" if s.key_variable else ""
            return LLMAuthError(head + hint)
        if status == 404:
            hint = f" (check the base URL and {s.model_variable})" if s.model_variable else ""
            return LLMNotFound(head + hint)
        if status in RETRIED:
            return LLMUnavailable(head + (" (still failing after retries)" if retried else ""))
        if 300 <= status < 400:
            return LLMProtocolError(
                f"{s.backend}: {url} answered {status} {_reason(status)}: redirects are not followed"
                " (set the base URL to the final address)"
            )
        return LLMProtocolError(head + " (the server refused the request)")


def _check(cancel: threading.Event | None, clock: Clock, deadline: float, s: Settings, url: str) -> None:
    if cancel is not None and cancel.is_set():
        raise LLMCancelled(f"{s.backend}: call to {url} cancelled")
    if clock.monotonic() >= deadline:
        raise LLMTimeout(f"{s.backend}: no complete answer from {url} before the deadline")


def _drain(events: queue.Queue[tuple[str, Any]]) -> None:
    """Empty the queue so a helper blocked on a full queue sees ``stop`` and ends."""
    while True:
        try:
            events.get_nowait()
        except queue.Empty:
            return


def _retry_wait(headers: httpx.Headers, attempt: int, clock: Clock) -> float:
    """Seconds to wait before the next attempt: ``retry-after`` when the server gave a usable one."""
    raw = (headers.get("retry-after") or "").strip()
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - clock.time())
    return float(min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)))


def _server_message(text: str) -> str:
    """The error message a server put in its body (any of the three protocols' shapes), on one short line."""
    message: Any = text
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error", doc.get("message", ""))
        if isinstance(err, dict):
            err = err.get("message", "")
        message = err if isinstance(err, str) else ""
    one_line = " ".join(str(message).split())
    return one_line[:MAX_ERROR_TEXT] + ("..." if len(one_line) > MAX_ERROR_TEXT else "")


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    return httpx.codes.get_reason_phrase(status)


def _exc_text(exc: Any) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

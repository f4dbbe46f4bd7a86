"""A loopback search server speaking SearXNG's JSON API, for AID.NET.WEB_SEARCH.v1 and the L6 web level.

    with FakeSearxng({"machina": [{"title": "Machina", "url": "https://example.org/", "content": "..."}]}) as fake:
        # point MACHINA_SEARCH_URL at fake.base_url
        ...
        fake.queries  # every q= received, in order

``GET /search?q=QUERY&format=json`` answers as SearXNG does: ``{"query", "number_of_results", "results":
[{"url", "title", "content", "engine", "engines", "score", "category", "parsed_url", "positions"}],
"answers", "corrections", "infoboxes", "suggestions", "unresponsive_engines"}``.  The results of a query
are those of the first corpus key found in it (case-insensitive), else none.  Like a SearXNG whose
``search.formats`` lacks json, any other ``format`` gets HTTP 403; a missing ``q`` gets 400.  ``pageno``
pages through the results ten at a time.

Hostile modes, for the tests of what the client does with a bad provider: ``mode="hang"`` (never answers
until the server closes), ``"huge"`` (a body of ``huge_bytes``), ``"garbage"`` (not JSON), ``"error"`` (HTTP 500).

As a program: ``python -m machina.testing.searxng --corpus FILE [--port 0]`` prints its base URL and
serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE_SIZE = 10
MODES = ("normal", "hang", "huge", "garbage", "error")


class FakeSearxng:
    def __init__(
        self,
        corpus: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        *,
        mode: str = "normal",
        huge_bytes: int = 10 * 1024 * 1024,
        port: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.corpus = {key.lower(): list(rows) for key, rows in (corpus or {}).items()}
        self.mode = mode
        self.released = threading.Event()  # set by close(): a hanging answer gives up
        self.huge_bytes = huge_bytes
        self.queries: list[str] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeSearxng:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeSearxng:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def record(self, path: str, query: str | None) -> None:
        with self._lock:
            self.paths.append(path)
            if query is not None:
                self.queries.append(query)

    def answer(self, query: str, page: int) -> dict[str, Any]:
        lowered = query.lower()
        rows = next((rows for key, rows in self.corpus.items() if key in lowered), [])
        window = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return {
            "query": query,
            "number_of_results": len(rows),
            "results": [_result(row, (page - 1) * PAGE_SIZE + i) for i, row in enumerate(window)],
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }


def _result(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    url = str(row.get("url", ""))
    parts = urlsplit(url)
    return {
        "url": url,
        "title": row.get("title", ""),
        "content": row.get("content", ""),
        "engine": "fake",
        "engines": ["fake"],
        "score": round(1.0 / (index + 1), 6),
        "category": "general",
        "parsed_url": [parts.scheme, parts.netloc, parts.path, "", parts.query, parts.fragment],
        "positions": [index + 1],
        **{k: v for k, v in row.items() if k not in ("url", "title", "content")},
    }


def _handler_for(fake: FakeSearxng) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_fake = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeSearxng
    protocol_version = "HTTP/1.1"
    server_version = "fake-searxng"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server_fake
        split = urlsplit(self.path)
        params = parse_qs(split.query)
        query = params.get("q", [None])[0]
        fake.record(split.path, query)
        if split.path not in ("/search", "/"):
            return self._send(404, b"not found", "text/plain")
        if query is None or not query.strip():
            return self._send(400, b"missing q", "text/plain")
        if params.get("format", ["html"])[0] != "json":
            return self._send(403, b"<html>403 Forbidden</html>", "text/html")
        if fake.mode == "hang":
            fake.released.wait()
            return None
        if fake.mode == "error":
            return self._send(500, b"internal error", "text/plain")
        if fake.mode == "garbage":
            return self._send(200, b"<html>this is not json", "application/json")
        if fake.mode == "huge":
            return self._send(200, b'{"results": [' + b" " * fake.huge_bytes + b"]}", "application/json")
        try:
            page = max(1, int(params.get("pageno", ["1"])[0]))
        except ValueError:
            return self._send(400, b"bad pageno", "text/plain")
        body = json.dumps(fake.answer(query, page)).encode()
        return self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client hung up (a capped read, a timeout): nothing to tell it


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m machina.testing.searxng", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="JSON file: an object mapping a query word to a list of results")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    corpus: dict[str, Any] = {}
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as handle:
            corpus = json.load(handle)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FakeSearxng(corpus, port=args.port) as fake:
        sys.stdout.write(fake.base_url + "\n")
        sys.stdout.flush()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

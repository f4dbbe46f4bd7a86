"""A loopback LLM server speaking the OpenAI, Anthropic and Ollama protocols, driven by a script of turns.

    with FakeLLM([{"tool_calls": [{"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "app.log"}}]},
                  {"text": "Found 2 errors."}]) as fake:
        # point OAI_COMPAT_BASE_URL / ANTHROPIC_BASE_URL / OLLAMA_HOST at fake.base_url
        ...
        fake.requests[0].headers["authorization"], fake.requests[0].body["messages"]

Endpoints: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic), ``POST /api/chat``
(Ollama), each streamed when the request says ``"stream": true``; ``GET /v1/models`` and ``GET /api/tags``.
Each chat request takes the next turn, whatever its protocol.  A turn is a JSON object:

- ``{"text": "..."}`` or ``{"json": VALUE}`` (the text is VALUE as JSON): a text answer;
- ``{"tool_calls": [{"aid": "AID.X.v1", "arguments": {...}, "id"?: "...", "name"?: "raw_function"}]}``,
  with ``text`` too if wanted;
- ``{"status": 429, "retry_after": 2, "message": "..."}``: an HTTP error in the protocol's error shape
  (401, 403, 404, 500, 529, ...);
- modifiers: ``"delay": S`` (wait before answering), ``"stall": S`` (streams: wait after the first frame with text),
  ``"truncate": true`` (cut the body or stream in the middle), ``"garbage": true`` (a body that is not the
  protocol), ``"finish": "length"``, ``"usage": {"input_tokens": N, "output_tokens": M}``, ``"ignore_stream": true``
  (answer one JSON body even when a stream was asked for, as some servers do).

When the turns run out, ``rules`` answer: ``{"match": REGEX, "on": "user"|"tool"|"any", "reply": TURN}``,
the first whose regex finds the text of the conversation's last message (a user's words, or a tool result
when ``on`` allows); ``\\1`` and ``\\g<name>`` in the reply's text are filled from the match.  With no turn
left and no rule matching, the answer is HTTP 400 "fake LLM: no scripted turn left", so a looping client
fails clearly.  ``api_key`` makes the server demand that key (bearer or ``x-api-key``) and answer 401 else.
The server also checks the requests it gets the way strict servers do (Anthropic's alternating roles and
required ``max_tokens``, OpenAI's known message keys, tool results answering a call) and answers 400 when
one is wrong.  Every request, chat or not, is kept in :attr:`FakeLLM.requests` (and appended as JSON lines
to ``record_path`` when given).

As a program: ``python -m machina.testing.fake_llm --script FILE [--port 0] [--record FILE]`` prints its
base URL on stdout and serves until SIGTERM or SIGINT.  FILE holds a list of turns, or an object with
``turns``, ``rules``, ``models`` and ``api_key``.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import re
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from machina.testing import fake_llm_wire as wire
from machina.testing.fake_llm_checks import check_request, last_message

CHAT_PATHS = {"/v1/chat/completions": wire.OPENAI, "/v1/messages": wire.ANTHROPIC, "/api/chat": wire.OLLAMA}
MODEL_PATHS = {"/v1/models": wire.OPENAI, "/api/tags": wire.OLLAMA}


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON, or None
    raw: bytes

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers, "body": self.body}


class FakeLLM:
    def __init__(
        self,
        turns: Iterable[dict[str, Any]] = (),
        *,
        rules: Sequence[dict[str, Any]] = (),
        models: Sequence[str] = ("fake-model",),
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: str | None = None,
    ) -> None:
        self.turns = list(turns)
        self.rules = [dict(r) for r in rules]
        for rule in self.rules:
            re.compile(rule["match"])
        self.models = list(models)
        self.api_key = api_key
        self.record_path = record_path
        self.requests: list[Recorded] = []
        self.answered = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path in CHAT_PATHS]

    @property
    def turns_left(self) -> int:
        return len(self.turns)

    def start(self) -> FakeLLM:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopping.set()  # wakes answers that are delaying or stalling
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- used by the handler -----------------------------------------------------------------------------

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)
            if self.record_path:
                with open(self.record_path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(request.to_json()) + "\n")

    def next_turn(self, protocol: str, body: Any) -> tuple[dict[str, Any], int]:
        """The turn that answers this chat request, and its number (1-based)."""
        with self._lock:
            self.answered += 1
            number = self.answered
            if self.turns:
                return self.turns.pop(0), number
        return self._rule_turn(protocol, body, number), number

    def _rule_turn(self, protocol: str, body: Any, number: int) -> dict[str, Any]:
        role, text = last_message(protocol, body)
        for rule in self.rules:
            wanted = rule.get("on", "any")
            if wanted != "any" and wanted != role:
                continue
            found = re.search(rule["match"], text)
            if found:
                reply = dict(rule["reply"])
                if "text" in reply:
                    reply["text"] = found.expand(reply["text"])
                return reply
        return {"status": 400, "message": f"fake LLM: no scripted turn left (request {number} unanswered)"}

    def key_ok(self, headers: dict[str, str]) -> bool:
        if self.api_key is None:
            return True
        sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(sent.encode(), self.api_key.encode())


def _handler_for(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        server_fake = fake

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms to each answer.
    disable_nagle_algorithm = True
    server_fake: FakeLLM

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests are the log

    def do_GET(self) -> None:
        fake = self.server_fake
        fake.record(Recorded("GET", self.path, self._headers(), None, b""))
        protocol = MODEL_PATHS.get(self.path)
        if protocol is None:
            self._json(404, {"error": f"fake LLM: no such endpoint {self.path}"})
        elif not fake.key_ok(self._headers()):
            self._json(401, wire.error_body(protocol, 401, "fake LLM: invalid API key"))
        else:
            self._json(200, wire.models_body(protocol, fake.models))

    def do_POST(self) -> None:
        fake = self.server_fake
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        fake.record(Recorded("POST", self.path, self._headers(), body, raw))
        protocol = CHAT_PATHS.get(self.path)
        if protocol is None:
            self._json(404, {"error": f"fake LLM: no such endpoint {self.path}"})
            return
        if not fake.key_ok(self._headers()):
            self._json(401, wire.error_body(protocol, 401, "fake LLM: invalid API key"))
            return
        problem = check_request(protocol, body)
        if problem:
            self._json(400, wire.error_body(protocol, 400, f"fake LLM: {problem}"))
            return
        turn, number = fake.next_turn(protocol, body)
        if turn.get("delay") and fake.stopping.wait(float(turn["delay"])):
            return
        self._answer(protocol, body, turn, number)

    def _answer(self, protocol: str, body: dict[str, Any], turn: dict[str, Any], number: int) -> None:
        if "status" in turn:
            headers = {"retry-after": str(turn["retry_after"])} if "retry_after" in turn else {}
            message = turn.get("message", f"fake LLM: scripted error {turn['status']}")
            self._json(int(turn["status"]), wire.error_body(protocol, int(turn["status"]), message), headers)
            return
        model = str(body.get("model", "fake-model"))
        if body.get("stream") and not turn.get("ignore_stream"):
            self._stream(protocol, turn, model, number)
            return
        if turn.get("garbage"):
            self._bytes(200, b"<html><body>502 Bad Gateway (not JSON)</body></html>", "application/json")
            return
        data = json.dumps(wire.body(protocol, wire.answer_from_turn(turn, number), model, number)).encode()
        self._bytes(200, data, "application/json", cut=bool(turn.get("truncate")))

    def _stream(self, protocol: str, turn: dict[str, Any], model: str, number: int) -> None:
        if turn.get("garbage"):
            frames = wire.garbage_frames(protocol)
        else:
            frames = wire.frames(protocol, wire.answer_from_turn(turn, number), model, number)
        if turn.get("truncate"):
            frames = frames[: max(1, len(frames) // 2)]
        kind = "application/x-ndjson" if protocol == wire.OLLAMA else "text/event-stream"
        stall_at = wire.FIRST_TEXT_FRAME[protocol] if turn.get("text") else 0
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("connection", "close")  # the body ends when the connection does
        self.end_headers()
        self.close_connection = True
        try:
            for position, frame in enumerate(frames):
                self.wfile.write(frame)
                self.wfile.flush()
                if position == stall_at and turn.get("stall") and self.server_fake.stopping.wait(float(turn["stall"])):
                    return
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away (cancelled): nothing to answer

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._bytes(status, json.dumps(doc).encode(), "application/json", headers=headers)

    def _bytes(
        self, status: int, data: bytes, kind: str, *, cut: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if cut:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data[: len(data) // 2] if cut else data)


# --- as a program ------------------------------------------------------------------------------------------


def load_script(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if isinstance(doc, list):
        return {"turns": doc}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a list of turns or an object with turns/rules/models/api_key")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m machina.testing.fake_llm", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--script", required=True, help="JSON file: a list of turns, or {turns, rules, models, api_key}"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", help="append each request received as a JSON line to this file")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError) as exc:
        print(f"fake_llm: {exc}", file=sys.stderr)
        return 66
    fake = FakeLLM(
        script.get("turns", ()),
        rules=script.get("rules", ()),
        models=script.get("models", ("fake-model",)),
        api_key=script.get("api_key"),
        host=args.host,
        port=args.port,
        record_path=args.record,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with fake:
        print(fake.base_url, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

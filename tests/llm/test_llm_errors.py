"""Each error class, retries within the deadline, deadlines, truncation, garbage and cancel, on every backend."""

from __future__ import annotations

import email.utils
import socket
import threading

import pytest
from llm_support import ANTHROPIC, KEY, OAI, OLLAMA, WIRES, Wire, backend

from machina.clock import FakeClock
from machina.exitcodes import ExitCode
from machina.llm import (
    LLMAuthError,
    LLMCancelled,
    LLMError,
    LLMNotFound,
    LLMProtocolError,
    LLMTimeout,
    LLMUnavailable,
    Message,
)

HI = [Message("user", "hi")]
by_name = pytest.mark.parametrize("wire", WIRES, ids=lambda w: w.name)
both_ways = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


def _on_text(stream: bool):
    return (lambda _: None) if stream else None


@by_name
@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, LLMAuthError, ExitCode.NOPERM),
        (403, LLMAuthError, ExitCode.NOPERM),
        (404, LLMNotFound, ExitCode.NOTFOUND),
        (400, LLMProtocolError, ExitCode.PROTOCOL),
    ],
)
def test_refusals_are_one_clear_line_naming_backend_and_url(fake_llm, wire: Wire, status, error, code) -> None:
    fake = fake_llm([{"status": status, "message": f"nope, your key {KEY} is wrong"}])
    with pytest.raises(error) as caught:
        backend(wire, fake).complete(HI)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{wire.name}: {fake.base_url}{wire.chat_path} answered {status}")
    if wire.key_var:  # the server echoed the key it was sent: the error shows it redacted
        assert KEY not in text and "<redacted>" in text
    assert caught.value.exit_code == code
    assert len(fake.chat_requests) == 1, "refusals are not retried"


def test_auth_error_names_the_key_variable(fake_llm) -> None:
    fake = fake_llm([{"status": 401}])
    with pytest.raises(LLMAuthError, match="check OAI_COMPAT_API_KEY"):
        backend(OAI, fake).complete(HI)


def test_not_found_names_the_model_variable(fake_llm) -> None:
    fake = fake_llm([{"status": 404, "message": "model 'test-model' not found"}])
    with pytest.raises(LLMNotFound, match=r"model 'test-model' not found \(check the base URL and OLLAMA_MODEL\)"):
        backend(OLLAMA, fake).complete(HI)


def test_the_fake_server_demands_its_key(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}], api_key="another-key")
    with pytest.raises(LLMAuthError):
        backend(ANTHROPIC, fake).complete(HI)


@by_name
@both_ways
@pytest.mark.parametrize("status", [429, 500, 502, 503, 529])
def test_overload_and_server_errors_are_retried(fake_llm, clock: FakeClock, wire: Wire, stream, status) -> None:
    fake = fake_llm([{"status": status}, {"status": status}, {"text": "third time lucky"}])
    answer = backend(wire, fake, clock).complete(HI, on_text=_on_text(stream))
    assert answer.text == "third time lucky"
    assert len(fake.chat_requests) == 3
    assert clock.monotonic() - 1000.0 == pytest.approx(0.5 + 1.0), "exponential backoff without retry-after"


@by_name
def test_retry_after_seconds_is_honoured(fake_llm, clock: FakeClock, wire: Wire) -> None:
    fake = fake_llm([{"status": 429, "retry_after": 7}, {"text": "ok"}])
    start = clock.monotonic()
    assert backend(wire, fake, clock).complete(HI, deadline=start + 30).text == "ok"
    assert clock.monotonic() - start == pytest.approx(7.0)


def test_retry_after_as_an_http_date_is_honoured(fake_llm, clock: FakeClock) -> None:
    when = email.utils.formatdate(clock.time() + 12, usegmt=True)
    fake = fake_llm([{"status": 503, "retry_after": when}, {"text": "ok"}])
    start = clock.monotonic()
    assert backend(OAI, fake, clock).complete(HI).text == "ok"
    assert clock.monotonic() - start == pytest.approx(12.0, abs=1.0)


@by_name
def test_a_retry_after_beyond_the_deadline_is_not_waited_for(fake_llm, clock: FakeClock, wire: Wire) -> None:
    fake = fake_llm([{"status": 429, "retry_after": 120}, {"text": "never asked"}])
    start = clock.monotonic()
    with pytest.raises(
        LLMUnavailable,
        match=r"answered 429 Too Many Requests: .*; waiting 120s to retry would pass the deadline \(20.0s left\)",
    ) as caught:
        backend(wire, fake, clock).complete(HI, deadline=start + 20)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert clock.monotonic() == start, "no time was spent waiting"
    assert len(fake.chat_requests) == 1


def test_retries_stop_at_the_call_timeout_when_there_is_no_deadline(fake_llm, clock: FakeClock) -> None:
    fake = fake_llm([{"status": 529, "retry_after": 3}] * 10)
    with pytest.raises(LLMUnavailable, match="529 Overloaded"):
        backend(ANTHROPIC, fake, clock, MACHINA_CHAT_TIMEOUT_MS="10000").complete(HI)
    assert len(fake.chat_requests) == 4  # at 0, 3, 6 and 9 s; a fifth would start after the 10 s limit


def test_retries_give_up_after_the_last_attempt(fake_llm, clock: FakeClock) -> None:
    fake = fake_llm([{"status": 500}] * 10)
    with pytest.raises(LLMUnavailable, match="still failing after retries"):
        backend(OAI, fake, clock, MACHINA_CHAT_TIMEOUT_MS="3600000").complete(HI)
    assert len(fake.chat_requests) == 6
    assert fake.turns_left == 4


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@by_name
def test_nothing_listening_is_unavailable_at_once(wire: Wire, clock: FakeClock) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(LLMUnavailable, match=rf"{wire.name}: cannot reach {url}{wire.chat_path}") as caught:
        backend(wire, url, clock).complete(HI)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert clock.monotonic() == 1000.0, "connection refused is not retried"


@by_name
@both_ways
def test_garbage_is_a_protocol_error(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"garbage": True}])
    with pytest.raises(LLMProtocolError, match="not JSON") as caught:
        backend(wire, fake).complete(HI, on_text=_on_text(stream))
    assert caught.value.exit_code == ExitCode.PROTOCOL


@by_name
@both_ways
def test_a_truncated_answer_is_a_protocol_error(fake_llm, wire: Wire, stream: bool) -> None:
    fake = fake_llm([{"text": "this answer will be cut off in the middle of it", "truncate": True}])
    with pytest.raises(LLMProtocolError, match=r"truncated|cut the answer off"):
        backend(wire, fake).complete(HI, on_text=_on_text(stream))


@by_name
def test_a_truncated_stream_of_tool_calls_is_a_protocol_error(fake_llm, wire: Wire) -> None:
    turn = {"tool_calls": [{"aid": "AID.A.v1", "arguments": {"x": 1}}, {"aid": "AID.B.v1", "arguments": {}}]}
    fake = fake_llm([{**turn, "truncate": True}])
    with pytest.raises(LLMProtocolError):
        backend(wire, fake).complete(HI, on_text=_on_text(True))


def test_tool_arguments_that_are_not_json_are_a_protocol_error() -> None:
    from machina.llm.oai_compat import OpenAICodec

    call = {"id": "c1", "type": "function", "function": {"name": "A-v1", "arguments": "{oops"}}
    doc = {"choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    with pytest.raises(LLMProtocolError, match="not valid JSON"):
        OpenAICodec().parse(doc)


def test_tool_arguments_that_are_not_an_object_are_a_protocol_error() -> None:
    from machina.llm.ollama import OllamaCodec

    doc = {
        "message": {"content": "", "tool_calls": [{"function": {"name": "A-v1", "arguments": [1, 2]}}]},
        "done": True,
    }
    with pytest.raises(LLMProtocolError, match="not a JSON object"):
        OllamaCodec().parse(doc)


@by_name
@both_ways
def test_the_deadline_ends_a_slow_call(fake_llm, wire: Wire, stream: bool) -> None:
    """A deadline smaller than the call timeout (60 s by default) is the one that counts."""
    import time

    fake = fake_llm([{"text": "too late", "delay": 30}])
    with pytest.raises(LLMTimeout, match="before the deadline") as caught:
        backend(wire, fake).complete(HI, deadline=time.monotonic() + 0.3, on_text=_on_text(stream))
    assert caught.value.exit_code == ExitCode.TEMPFAIL


def test_the_call_timeout_ends_a_slow_call_when_it_is_the_smaller(fake_llm) -> None:
    import time

    fake = fake_llm([{"text": "too late", "delay": 30}])
    with pytest.raises(LLMTimeout):
        backend(OAI, fake, MACHINA_CHAT_TIMEOUT_MS="300").complete(HI, deadline=time.monotonic() + 600)


def test_oai_compat_timeout_sec_replaces_the_chat_timeout(fake_llm) -> None:
    b = backend(OAI, fake_llm(), OAI_COMPAT_TIMEOUT_SEC="5", MACHINA_CHAT_TIMEOUT_MS="600000")
    assert b.transport.settings.timeout_s == 5.0  # type: ignore[attr-defined]


def test_a_deadline_already_passed_sends_nothing(fake_llm, clock: FakeClock) -> None:
    fake = fake_llm([{"text": "ok"}])
    with pytest.raises(LLMTimeout):
        backend(OAI, fake, clock).complete(HI, deadline=clock.monotonic() - 1)
    assert fake.chat_requests == []


@by_name
def test_cancel_stops_a_stream_mid_answer(fake_llm, wire: Wire) -> None:
    fake = fake_llm([{"text": "one two three four five six", "stall": 30}])
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(delta: str) -> None:
        seen.append(delta)
        cancel.set()  # the human pressed Ctrl-C after the first words

    with pytest.raises(LLMCancelled) as caught:
        backend(wire, fake).complete(HI, on_text=on_text, cancel=cancel)
    assert caught.value.exit_code == ExitCode.INTERRUPTED
    assert seen and "".join(seen) != "one two three four five six"


def test_cancel_while_waiting_for_the_first_byte(fake_llm) -> None:
    fake = fake_llm([{"text": "slow", "delay": 30}])
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(LLMCancelled):
        backend(OAI, fake).complete(HI, cancel=cancel)


def test_cancel_set_before_the_call_sends_nothing(fake_llm) -> None:
    fake = fake_llm([{"text": "ok"}])
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(LLMCancelled):
        backend(OAI, fake).complete(HI, cancel=cancel)
    assert fake.chat_requests == []


def test_cancel_while_waiting_to_retry(fake_llm) -> None:
    """With the real clock: the wait between retries is cut short by the cancel."""
    fake = fake_llm([{"status": 429, "retry_after": 30}, {"text": "never"}])
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(LLMCancelled):
        backend(OAI, fake).complete(HI, cancel=cancel)
    assert len(fake.chat_requests) == 1


def test_a_script_that_runs_out_fails_clearly(fake_llm) -> None:
    fake = fake_llm([{"text": "only answer"}])
    b = backend(OAI, fake)
    b.complete(HI)
    with pytest.raises(LLMError, match="fake LLM: no scripted turn left"):
        b.complete(HI)


@by_name
def test_mid_stream_error_events_are_errors(fake_llm, wire: Wire) -> None:
    """Error objects inside a stream (OpenAI and Ollama put them in a frame, Anthropic in an error event)."""
    from machina.llm.anthropic import AnthropicStream
    from machina.llm.oai_compat import OpenAIStream
    from machina.llm.ollama import OllamaStream

    frames = {
        "oai_compat": (OpenAIStream, b'data: {"error": {"message": "boom"}}\n\n'),
        "anthropic": (
            AnthropicStream,
            b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "boom"}}\n\n',
        ),
        "ollama": (OllamaStream, b'{"error": "boom"}\n'),
    }
    decoder_type, frame = frames[wire.name]
    with pytest.raises(LLMError, match="boom"):
        decoder_type(wire.name).feed(frame)


def test_redirects_are_not_followed(fake_llm) -> None:
    """A key must not travel to wherever a redirect points."""
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(307)
            self.send_header("location", "http://198.51.100.7/steal")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(LLMProtocolError, match="307 Temporary Redirect: redirects are not followed"):
            backend(OAI, url).complete(HI)
    finally:
        server.shutdown()
        server.server_close()


def test_an_error_object_with_status_200_is_a_protocol_error() -> None:
    from machina.llm.oai_compat import OpenAICodec

    with pytest.raises(LLMProtocolError, match="error object: quota exceeded"):
        OpenAICodec().parse({"error": {"message": "quota exceeded"}})

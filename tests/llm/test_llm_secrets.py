"""The API key travels in its header and nowhere else: not in bodies, URLs, log records or error texts."""

from __future__ import annotations

import logging

import pytest
from llm_support import KEY, KEYED, Wire, backend, scan_call

from machina.llm import LLMError, Message

by_name = pytest.mark.parametrize("wire", KEYED, ids=lambda w: w.name)


@by_name
def test_the_key_is_sent_in_its_header_only(fake_llm, wire: Wire) -> None:
    fake = fake_llm([scan_call(), {"text": "done"}], api_key=KEY)
    b = backend(wire, fake)
    b.complete([Message("user", "scan")], on_text=lambda _: None)
    b.complete([Message("user", "again")])
    b.list_models()
    assert len(fake.requests) == 3
    for request in fake.requests:
        carrying = [name for name, value in request.headers.items() if KEY in value]
        assert carrying == (["authorization"] if wire.key_var == "OAI_COMPAT_API_KEY" else ["x-api-key"])
        assert KEY.encode() not in request.raw
        assert KEY not in request.path
    assert KEY not in b.base_url


@by_name
def test_no_log_record_or_error_shows_the_key(fake_llm, wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    echo = f"Incorrect API key provided: {KEY}"
    fake = fake_llm(
        [
            {"status": 429, "retry_after": 0},
            {"text": "fine"},
            {"status": 401, "message": echo},
            {"status": 500, "message": echo},
            {"status": 500, "message": echo},
            {"text": "truncated", "truncate": True},
        ]
    )
    b = backend(wire, fake, MACHINA_CHAT_TIMEOUT_MS="100")
    assert b.complete([Message("user", "hi")]).text == "fine"
    errors: list[str] = []
    for _ in range(2):
        with pytest.raises(LLMError) as caught:
            b.complete([Message("user", "hi")])
        errors.append(str(caught.value))
    assert "401" in errors[0] and "500" in errors[1]
    assert caplog.records, "the test must see log records to mean anything"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.__dict__)
    for text in errors:
        assert KEY not in text

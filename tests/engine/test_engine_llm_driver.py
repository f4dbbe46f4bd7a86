"""The example LLM policy driver against a local server that speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from engine_support import ERROR_SCAN, EXAMPLES, events


class ChatCompletions(BaseHTTPRequestHandler):
    """Answers like a model that reads the menu and names the first tool not yet done, chattily."""

    prompts: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        self.prompts.append(prompt)
        done = prompt.split("Already done: ", 1)[1].split(".\n", 1)[0]
        menu = [line.split(": ", 1) for line in prompt.splitlines() if line.startswith("SID")]
        pending = [sid for sid, rest in menu if rest.split(" ", 1)[0] not in done]
        content = f"I would run {pending[0]} next." if pending else "Nothing left: NOOP."
        answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def llm_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    finally:
        server.shutdown()
        server.server_close()


def test_llm_driver_picks_through_the_reply_grammar(make_engine, root: Path, llm_server: str) -> None:
    shutil.copy(EXAMPLES / "policies" / "llm_stub.py", root / "policies")
    (root / "policies" / "llm_stub.json").write_text(json.dumps({"url": llm_server, "model": "test-model"}))
    result = make_engine(MACHINA_POLICY_CMD="python3 policies/llm_stub.py").run(
        {**ERROR_SCAN, "control_mode": "POLICY_ONLY"}
    )
    assert result.status == "done", result
    raws = [s["raw"].strip() for s in events(result.log_path, "selection")]
    assert raws == ["<PICK><SID0001><END>", "<PICK><SID0002><END>"]
    assert "AID.ERROR_SCAN.v1" in ChatCompletions.prompts[0]


def test_llm_driver_without_settings_falls_back(make_engine, root: Path) -> None:
    shutil.copy(EXAMPLES / "policies" / "llm_stub.py", root / "policies")
    result = make_engine(MACHINA_POLICY_CMD="python3 policies/llm_stub.py").run(
        {**ERROR_SCAN, "control_mode": "BLENDED"}
    )
    assert result.status == "done"
    assert events(result.log_path, "selection")[0]["fallback_reason"] == "exit_status"

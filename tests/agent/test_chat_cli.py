"""``machina chat`` as a user runs it: a subprocess on the real toolhost and the fake LLM server, in a pipe
and on a pseudo-terminal (the line editor, approvals answered with y, Ctrl-C cancelling a turn)."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import backend_settings
from tests.agent.test_routes import closed_port_url

SCAN_CALL = {"aid": "AID.ERROR_SCAN.v1", "arguments": {"input_path": "data/app.log", "pattern": "ERROR"}}
SUMMARY = {"match": r'"matches": (\d+)', "on": "tool", "reply": {"text": "The log has \\1 errors."}}
WRITE = {"aid": "AID.FILE.WRITE.v1", "arguments": {"path": "work/out.txt", "content": "hello", "mkdirs": True}}
SAY_STATUS = {"match": r'"status": "(\w+)"', "on": "tool", "reply": {"text": "The write ended with \\1."}}


def chat_env(root: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),  # nothing is written into the real home
        "MACHINA_ROOT": str(root),
        "MACHINA_ENV_FILE": "/dev/null",
    }
    env.update(settings)
    return env


def chat(
    root: Path, settings: dict[str, str], *args: str, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "machina.entrypoints", "machina", "chat", *args],
        env=chat_env(root, settings),
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
        cwd=root,
    )


@pytest.mark.parametrize("backend", ["oai_compat", "anthropic", "ollama"])
def test_chat_once_scans_the_log_in_the_sandbox_and_prints_the_models_summary(
    backend: str, toolhost: Any, fake_llm: Any, agent_root: Path
) -> None:
    toolhost()
    fake = fake_llm([{"tool_calls": [SCAN_CALL]}], rules=[SUMMARY])
    done = chat(agent_root, backend_settings(backend, fake.base_url), "--once", "scan data/app.log for ERROR")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "The log has 2 errors.\n"
    assert "[tool] AID.ERROR_SCAN.v1 -> ok" in done.stderr
    assert (agent_root / "state" / "user_activity").exists()  # machina-autonomic sees a person was here


def test_chat_with_no_model_server_still_scans_through_the_fallback(toolhost: Any, agent_root: Path) -> None:
    toolhost()
    settings = backend_settings("oai_compat", closed_port_url())
    done = chat(agent_root, settings, "--once", "scan data/app.log for ERROR")
    assert done.returncode == 0, done.stderr
    assert "ERROR cannot open socket" in done.stdout
    assert "oai_compat" in done.stderr  # says why the model did not answer
    poem = chat(agent_root, settings, "--once", "write me a poem")
    assert poem.returncode == 69 and "model is unreachable" in poem.stderr


def test_chat_in_a_pipe_reads_a_message_per_line_and_writes_json_events(
    toolhost: Any, fake_llm: Any, agent_root: Path
) -> None:
    toolhost()
    fake = fake_llm([{"text": "Hi there."}, {"tool_calls": [SCAN_CALL]}], rules=[SUMMARY])
    stdin = "hello\n\n/status\nscan data/app.log for ERROR\n/quit\nnever read\n"
    done = chat(agent_root, backend_settings("oai_compat", fake.base_url), "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [(e["event"], e.get("phase")) for e in events]
    assert kinds == [
        ("reply", None),
        ("done", None),
        ("info", None),
        ("tool", "started"),
        ("tool", "result"),
        ("reply", None),
        ("done", None),
    ]
    assert events[0]["text"] == "Hi there." and events[5]["text"] == "The log has 2 errors."
    assert events[2]["backend"] == "oai_compat" and events[2]["toolhost"] == "running"
    assert events[6]["reason"] == "answered" and events[6]["tools"] == ["AID.ERROR_SCAN.v1"]
    assert len(fake.chat_requests) == 3  # "never read" was not sent


def test_chat_without_a_terminal_refuses_every_approval(toolhost: Any, fake_llm: Any, agent_root: Path) -> None:
    toolhost("supervised")
    fake = fake_llm([{"tool_calls": [WRITE]}], rules=[SAY_STATUS])
    done = chat(agent_root, backend_settings("oai_compat", fake.base_url), "--once", "write hello to work/out.txt")
    assert done.returncode == 0, done.stderr
    assert "no one at a terminal to approve it: refused" in done.stderr
    assert '"content": "hello"' in done.stderr  # the full inputs were shown
    assert done.stdout == "The write ended with denied.\n"
    assert not (agent_root / "work" / "out.txt").exists()


def test_chat_exit_codes_for_bad_configuration_and_unusable_answers(fake_llm: Any, agent_root: Path) -> None:
    bad = chat(agent_root, {"MACHINA_CHAT_BACKEND": "gpt5"}, "--once", "hi")
    assert bad.returncode == 78 and "MACHINA_CHAT_BACKEND" in bad.stderr
    no_model = chat(agent_root, {"OAI_COMPAT_BASE_URL": "http://127.0.0.1:9"}, "--once", "hi")
    assert no_model.returncode == 78 and "OAI_COMPAT_MODEL" in no_model.stderr
    fake = fake_llm([{"garbage": True}])
    garbage = chat(agent_root, backend_settings("oai_compat", fake.base_url), "--once", "hi")
    assert garbage.returncode == 76 and "[error]" in garbage.stderr


def test_no_api_key_appears_in_output_logs_memory_or_the_toolhost(
    toolhost: Any, fake_llm: Any, agent_root: Path
) -> None:
    host = toolhost()
    key = "sk-test-a1b2c3d4e5f6-secret"
    fake = fake_llm([{"tool_calls": [SCAN_CALL]}, {"text": f"I will not repeat {key}"}], api_key=key)
    settings = backend_settings("oai_compat", fake.base_url, OAI_COMPAT_API_KEY=key, MACHINA_LOG_LEVEL="debug")
    done = chat(agent_root, settings, "-v", "--once", "scan data/app.log for ERROR")
    assert done.returncode == 0, done.stderr
    assert fake.chat_requests[0].headers["authorization"] == f"Bearer {key}"  # it was really used
    assert key not in done.stderr
    written = [p for p in agent_root.rglob("*") if p.is_file()]
    assert all(key.encode() not in p.read_bytes() for p in written)
    assert key not in host.log()


# --- on a terminal -----------------------------------------------------------------------------------------


class Terminal:
    """``machina chat`` on a pseudo-terminal, read until expected text appears."""

    def __init__(self, root: Path, settings: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become machina chat
            os.chdir(root)
            argv = [sys.executable, "-m", "machina.entrypoints", "machina", "chat", "--history-file", ""]
            os.execve(sys.executable, argv, {**chat_env(root, settings), "TERM": "dumb"})
        self.seen = b""

    def expect(self, text: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = end - time.monotonic()
            assert left > 0, f"{text!r} did not appear; the terminal shows:\n{self.seen.decode(errors='replace')}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        return self.seen.decode(errors="replace")

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def close(self, grace_s: float = 10) -> int:
        """The exit code, once the program has ended by itself (killed, and -9, after ``grace_s``)."""
        end = time.monotonic() + grace_s
        try:
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    return os.waitstatus_to_exitcode(status)
                if time.monotonic() > end:
                    os.kill(self.pid, signal.SIGKILL)
                    return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
                self.expect_nothing(0.05)
        finally:
            os.close(self.fd)

    def expect_nothing(self, seconds: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready:
            with contextlib.suppress(OSError):
                self.seen += os.read(self.fd, 4096)


def test_chat_on_a_terminal_asks_for_approval_and_ctrl_c_cancels_a_turn(
    toolhost: Any, fake_llm: Any, agent_root: Path
) -> None:
    toolhost("supervised")
    fake = fake_llm(
        [{"tool_calls": [WRITE]}, {"text": "Written."}, {"text": "Once upon a time, stalling", "stall": 60}],
        rules=[{"match": "still there", "on": "user", "reply": {"text": "Yes, still here."}}],
    )
    term = Terminal(agent_root, backend_settings("oai_compat", fake.base_url))
    try:
        term.expect("/help for commands")
        term.send("write hello to work/out.txt\r")
        term.expect("allow it? [y]es once")
        term.send("?\r")
        term.expect("the same call later asks again")
        term.send("e\r")
        term.expect("one line of JSON")
        term.send('{"path": "work/out.txt", "content": "edited by a person", "mkdirs": true}\r')
        term.expect("Written.")
        assert (agent_root / "work" / "out.txt").read_text() == "edited by a person"
        term.send("tell me a long story\r")
        term.expect("Once upon")
        term.send("\x03")  # Ctrl-C
        term.expect("[cancelling this turn; Ctrl-C again to quit]")  # written by the handler itself
        term.expect("[stopped] cancelled")
        term.send("are you still there?\r")
        term.expect("Yes, still here.")
        term.send("/quit\r")
    finally:
        code = term.close()
    assert code == 0


def test_chat_with_the_earlier_chat_cmd_setting_runs_the_driver_program(
    toolhost: Any, fake_llm: Any, agent_root: Path
) -> None:
    toolhost()
    action = {
        "type": "action",
        "actions": [{"kind": "tool", "aid": SCAN_CALL["aid"], "inputs": SCAN_CALL["arguments"]}],
        "needs_summary": True,
    }
    fake = fake_llm([{"json": action}, {"json": {"content": "Two errors found."}}])
    settings = backend_settings("oai_compat", fake.base_url, MACHINA_CHAT_CMD="machina-chat-driver")
    done = chat(agent_root, settings, "--once", "scan data/app.log for ERROR")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Two errors found.\n", done.stderr
    assert len(fake.chat_requests) == 2


def test_chat_without_a_toolhost_says_so_and_still_answers(fake_llm: Any, agent_root: Path) -> None:
    fake = fake_llm([{"text": "I can talk, but no tools today."}])
    done = chat(agent_root, backend_settings("oai_compat", fake.base_url), "--once", "what can you do?")
    assert done.returncode == 0, done.stderr
    assert "toolhost unavailable" in done.stderr
    assert done.stdout == "I can talk, but no tools today.\n"
    assert "tools" not in fake.chat_requests[0].body  # nothing offered that could not run


def test_a_tool_run_from_chat_does_not_see_the_api_key(toolhost: Any, fake_llm: Any, agent_root: Path) -> None:
    key = "sk-test-env-leak-check-9876"
    # the toolhost gets the key in its own environment, as a careless unit file might give it
    toolhost("open", MACHINA_SHELL_ALLOWED_EXE="env", OAI_COMPAT_API_KEY=key)
    env_call = {"aid": "AID.SHELL.EXEC.v1", "arguments": {"cmd": ["env"]}}
    reply = {"match": "PATH=", "on": "tool", "reply": {"text": "I saw the environment."}}
    fake = fake_llm([{"tool_calls": [env_call]}], rules=[reply], api_key=key)
    settings = backend_settings("oai_compat", fake.base_url, OAI_COMPAT_API_KEY=key)
    done = chat(agent_root, settings, "--once", "show me the environment of a tool")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "I saw the environment.\n"  # the tool ran and its output reached the model
    tool_output = json.dumps(fake.chat_requests[1].body["messages"][-1])
    assert "PATH=" in tool_output and key not in tool_output
    # nor any file under the root: memory, run logs, the toolhost's own log
    assert all(key.encode() not in p.read_bytes() for p in agent_root.rglob("*") if p.is_file())


def test_the_operator_sees_and_removes_standing_approvals_from_chat(fake_llm: Any, agent_root: Path) -> None:
    from machina.agent.always import AlwaysRules

    AlwaysRules.under(str(agent_root / "state")).add("AID.FILE.WRITE.v1", WRITE["arguments"], "someone")
    fake = fake_llm([])
    done = chat(
        agent_root, backend_settings("oai_compat", fake.base_url), "--json", stdin="/always\n/forget 0\n/always\n"
    )
    assert done.returncode == 0, done.stderr
    listed, forgot, after = (json.loads(line) for line in done.stdout.splitlines())
    assert "AID.FILE.WRITE.v1" in listed["standing_approvals"][0] and "someone" in listed["standing_approvals"][0]
    assert "forgot the standing approval for AID.FILE.WRITE.v1" in forgot["text"]
    assert after["standing_approvals"] == ["none"]
    assert AlwaysRules.under(str(agent_root / "state")).rules() == []

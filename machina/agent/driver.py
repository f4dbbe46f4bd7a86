"""The chat driver contract (``MACHINA_CHAT_CMD``, AGENT.md section 1): the intent and summary phases of a
turn delegated to an external program.

One process per call: argv (no shell), the JSON request on stdin, the answer the first stdout line that is
a JSON object.  Requests: ``{"mode": "intent"|"summary"|"continue", "user_message", "conversation",
"available_tools", "available_goals", "session", "observation"?, "action_results"?}``.  The answers are
validated here (:data:`ANSWER_SCHEMAS`); whatever they name still goes through the session's checks and the
toolhost.

The program runs with a cleared environment: PATH, LANG, a private HOME/TMPDIR, and only the chat variables
of the backend it uses, its own key included (no other secret).  Its time: the backend's HTTP limit it is
given (``MACHINA_CHAT_TIMEOUT_MS``, lowered to what is left of the turn's budget) plus
:data:`GRACE_S`, so the process is never killed before its own HTTP call could time out (AGENT.md
section 2).  It runs in its own process group, killed whole on expiry, under :data:`RLIMITS`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

from machina.exitcodes import ExitCode, MachinaError
from machina.proc import Rlimits, run_bounded

GRACE_S = 10.0
STDOUT_MAX = 1024 * 1024
STDERR_MAX = 4096
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
RLIMITS = Rlimits(as_mb=4096, fsize_mb=16, nofile=256, nproc=64)
MODES = ("intent", "summary", "continue")

# Variables a driver may see, per backend: its own, and no other component's secrets.
SHARED_VARIABLES = (
    "MACHINA_CHAT_BACKEND",
    "MACHINA_CHAT_TEMPERATURE",
    "MACHINA_CHAT_MAX_TOKENS",
    "MACHINA_CHAT_TOOL_MODE",
    "MACHINA_LOG_LEVEL",
)
BACKEND_VARIABLES = {
    "oai_compat": ("OAI_COMPAT_BASE_URL", "OAI_COMPAT_MODEL", "OAI_COMPAT_API_KEY", "OAI_COMPAT_TIMEOUT_SEC"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL", "ANTHROPIC_API_KEY", "ANTHROPIC_MAX_TOKENS"),
    "ollama": ("OLLAMA_HOST", "OLLAMA_MODEL"),
}

MODEL_VARIABLES = {"oai_compat": "OAI_COMPAT_MODEL", "anthropic": "ANTHROPIC_MODEL", "ollama": "OLLAMA_MODEL"}
_TEXT = {"type": "string"}
_ACTION = {
    "type": "object",
    "required": ["kind"],
    "oneOf": [
        {
            "properties": {"kind": {"const": "tool"}, "aid": _TEXT, "inputs": {"type": "object"}},
            "required": ["kind", "aid"],
        },
        {
            "properties": {
                "kind": {"const": "goal"},
                "goal_id": _TEXT,
                "inputs": {"type": "object"},
                "candidate_tags": {"type": "array", "items": _TEXT},
            },
            "required": ["kind", "goal_id"],
        },
    ],
}
_ACTIONS = {
    "properties": {
        "type": {"const": "action"},
        "actions": {"type": "array", "minItems": 1, "maxItems": 12, "items": _ACTION},
        "needs_summary": {"type": "boolean"},
    },
    "required": ["type", "actions"],
}
_REPLY = {"properties": {"type": {"const": "reply"}, "content": _TEXT}, "required": ["type", "content"]}
_CONFIG = {
    "properties": {
        "type": {"const": "config"},
        "changes": {
            "type": "array",
            "maxItems": 16,
            "items": {"type": "object", "properties": {"key": _TEXT}, "required": ["key", "value"]},
        },
    },
    "required": ["type", "changes"],
}
_DONE = {"properties": {"type": {"const": "done"}, "content": _TEXT}, "required": ["type", "content"]}
_CONTINUE = {"properties": {"type": {"const": "continue"}}, "required": ["type"]}
ANSWER_SCHEMAS: dict[str, dict[str, Any]] = {
    "intent": {"type": "object", "oneOf": [_REPLY, _ACTIONS, _CONFIG]},
    "summary": {"type": "object", "properties": {"content": _TEXT}, "required": ["content"]},
    "continue": {"type": "object", "oneOf": [_DONE, _ACTIONS, _CONTINUE]},
}


class DriverError(MachinaError):
    """The driver did not give a valid answer (could not start, timed out, failed, said no JSON)."""

    exit_code = ExitCode.PROTOCOL


def first_json_object(stdout: str) -> dict[str, Any] | None:
    for line in stdout.splitlines():
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def check_answer(mode: str, answer: Any) -> dict[str, Any]:
    """The answer if it fits its mode's shape; DriverError says where it does not."""
    try:
        jsonschema.validate(answer, ANSWER_SCHEMAS[mode])
    except jsonschema.ValidationError as exc:
        raise DriverError(f"chat driver: the {mode} answer does not fit the contract: {exc.message[:200]}") from None
    assert isinstance(answer, dict)
    return answer


def driver_environment(environ: Mapping[str, str], home: str, timeout_ms: int) -> dict[str, str]:
    """The driver's whole environment (see the module's docstring)."""
    backend = environ.get("MACHINA_CHAT_BACKEND", "oai_compat")
    env = {"PATH": f"{os.path.dirname(sys.executable)}:{SAFE_PATH}", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
    for name in (*SHARED_VARIABLES, *BACKEND_VARIABLES.get(backend, ())):
        if environ.get(name):
            env[name] = environ[name]
    env["MACHINA_ENV_FILE"] = "/dev/null"  # what it needs is here; it does not read the suite's file
    env["MACHINA_CHAT_TIMEOUT_MS"] = str(timeout_ms)
    env.pop("OAI_COMPAT_TIMEOUT_SEC", None)  # one limit, the one just set
    return env


class ExternalDriver:
    def __init__(
        self,
        argv: Sequence[str],
        settings: Mapping[str, str],
        chat_timeout_s: float,
        cwd: str,
        grace_s: float = GRACE_S,
    ) -> None:
        """``settings``: the effective configuration values (names to text) the environment is built from."""
        self.argv = list(argv)
        self.grace_s = grace_s
        self.settings = dict(settings)
        self.chat_timeout_s = chat_timeout_s
        self.cwd = cwd

    def apply(self, overrides: Mapping[str, Any]) -> None:
        """A confirmed change of backend, model or temperature, for the next calls."""
        if "backend" in overrides:
            self.settings["MACHINA_CHAT_BACKEND"] = str(overrides["backend"])
        backend = self.settings.get("MACHINA_CHAT_BACKEND", "oai_compat")
        if "model" in overrides:
            self.settings[MODEL_VARIABLES[backend]] = str(overrides["model"])
        if "temperature" in overrides:
            self.settings["MACHINA_CHAT_TEMPERATURE"] = str(overrides["temperature"])

    def ask(
        self, mode: str, request: dict[str, Any], seconds_left: float, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """The driver's answer for ``mode``; DriverError when there is none (``cancel`` set: killed at once)."""
        if seconds_left <= 0:
            raise DriverError("chat driver: no time left in the turn's budget")
        http_s = max(1.0, min(self.chat_timeout_s, seconds_left))
        private = tempfile.mkdtemp(prefix="machina-chat-driver-")  # 0700
        try:
            env = driver_environment(self.settings, private, int(http_s * 1000))
            try:
                result = run_bounded(
                    self.argv,
                    env=env,
                    cwd=self.cwd,
                    stdin=json.dumps({"mode": mode, **request}, ensure_ascii=False).encode(),
                    timeout_s=http_s + self.grace_s,
                    stdout_max=STDOUT_MAX,
                    stderr_max=STDERR_MAX,
                    rlimits=RLIMITS,
                    stop=cancel.is_set if cancel is not None else None,
                )
            except OSError as exc:
                raise DriverError(f"chat driver: cannot start {self.argv[0]}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        if result.stopped:
            raise DriverError("chat driver: cancelled")
        if result.timed_out:
            raise DriverError(f"chat driver: no answer within {http_s + self.grace_s:g}s")
        if result.stdout_truncated:
            raise DriverError(f"chat driver: more than {STDOUT_MAX} bytes on stdout")
        answer = first_json_object(result.stdout.decode("utf-8", "replace"))
        if answer is None:
            tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
            raise DriverError(f"chat driver: no JSON answer ({tail[0][:200]})")
        return check_answer(mode, answer)

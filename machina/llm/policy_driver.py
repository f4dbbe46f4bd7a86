"""An LLM policy driver for the goal engine (``MACHINA_POLICY_CMD``): asks the configured backend which tool is next.

It reads the engine's payload (docs/POLICY_DRIVER.md: the file named by its last argument, or stdin with
``-``), asks the model for a JSON choice validated against the menu, and prints exactly one line of the reply
grammar: ``<PICK><SIDdddd><END>`` (with ``<INP64>`` when the model patches inputs), ``<ASK_SUP><END>`` or
``<NOOP><END>``.  An answer that is not a valid choice, names a SID not on the menu or sets a reserved
(``_``) input key becomes ``<NOOP><END>``: the model's words never reach the engine as they are.

Exit status: 0 with a reply; when the model could not be asked, the error's code (69 unreachable, 75 timed
out, 77 key refused, 67 model not found, 76 protocol error), so the engine falls back to its own selector;
78 for bad configuration; 65 for a payload that is not the engine's.

The engine starts drivers with a cleared environment, so the backend settings (``MACHINA_CHAT_BACKEND``,
``OAI_COMPAT_*``, ``ANTHROPIC_*``, ``OLLAMA_*``) come from an env file: ``--env FILE`` (the wrapper
``examples/policies/llm_policy.py`` passes ``llm_policy.env`` beside itself), else ``MACHINA_ENV_FILE`` or
/etc/machina/machina.env as for every Machina program.  The model call ends before the engine's
``MACHINA_POLICY_TIMEOUT_MS`` would kill the driver.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from machina.config import ConfigError, load
from machina.engine.selectors.grammar import ReplyError, parse_reply, reserved_keys
from machina.exitcodes import ExitCode
from machina.llm.backend import open_backend
from machina.llm.errors import LLMError
from machina.llm.jsonmode import JSONAnswerError
from machina.llm.types import Message
from machina.log import setup as log_setup

NOOP = "<NOOP><END>"
ASK_SUP = "<ASK_SUP><END>"
# Time kept back from the engine's limit for starting Python and printing the answer.
STARTUP_MARGIN_S = 1.0

SYSTEM = (
    "You choose the next tool for Machina's goal engine. You are shown a goal, what is already done, the inputs "
    "and a menu of tools, each with a SID. Choose the one tool that moves the goal forward next, NOOP when "
    "nothing more is needed, or ASK_SUP when a human supervisor must decide. Answer with one JSON object: "
    '{"choice": "<SID, NOOP or ASK_SUP>"}, optionally with "inputs": {...} to change inputs of the chosen tool.'
)


def choice_schema(payload: dict[str, Any]) -> dict[str, Any]:
    sids = [entry["sid"] for entry in payload["menu"]]
    return {
        "type": "object",
        "properties": {"choice": {"enum": [*sids, "NOOP", "ASK_SUP"]}, "inputs": {"type": "object"}},
        "required": ["choice"],
    }


def prompt(payload: dict[str, Any]) -> str:
    menu = "\n".join(
        f"{e['sid']}: {e['aid']} ({e.get('name', '')}; tags {', '.join(e.get('tags', []))})" for e in payload["menu"]
    )
    done = ", ".join(payload.get("completed") or []) or "nothing yet"
    return (
        f"Goal: {payload.get('goal_id', payload.get('goal_digest', '?'))} (step {payload.get('step', '?')}).\n"
        f"Already done: {done}.\n"
        f"Inputs: {json.dumps(payload.get('inputs', {}), sort_keys=True)}\n"
        f"Menu:\n{menu}"
    )


def reply_for(answer_text: str, payload: dict[str, Any]) -> str:
    """The grammar line for the model's (already schema-checked) JSON answer; NOOP when it is not usable."""
    try:
        doc = json.loads(answer_text)
    except ValueError:
        return NOOP
    choice = doc.get("choice") if isinstance(doc, dict) else None
    if choice == "NOOP":
        return NOOP
    if choice == "ASK_SUP":
        return ASK_SUP
    if choice not in {e["sid"] for e in payload["menu"]}:
        return NOOP
    inputs = doc.get("inputs")
    if not inputs:
        return f"<PICK><{choice}><END>"
    if not isinstance(inputs, dict) or reserved_keys(inputs):
        return NOOP  # a model trying to set the suite's own keys gets nothing picked
    encoded = base64.b64encode(json.dumps(inputs).encode()).decode("ascii")
    return f"<PICK><{choice}><INP64>{encoded}</INP64><END>"


def bare_word(text: str, payload: dict[str, Any]) -> str | None:
    """Models without JSON discipline often answer just ``SID0002`` or ``NOOP``: accept exactly that."""
    word = text.strip().strip("`\"'.").strip()
    if word in {e["sid"] for e in payload["menu"]}:
        return f"<PICK><{word}><END>"
    return {"NOOP": NOOP, "ASK_SUP": ASK_SUP}.get(word)


def decide(payload: dict[str, Any], cfg: Any) -> str:
    """Ask the model and return the reply line (raises LLMError when the model cannot be asked)."""
    budget_s = cfg["MACHINA_POLICY_TIMEOUT_MS"] / 1000.0 - STARTUP_MARGIN_S
    deadline = time.monotonic() + max(0.5, budget_s)
    backend = open_backend(cfg)
    try:
        answer = backend.complete(
            [Message("system", SYSTEM), Message("user", prompt(payload))],
            json_schema=choice_schema(payload),
            deadline=deadline,
        )
        line = reply_for(answer.text, payload)
    except JSONAnswerError as exc:
        line = bare_word(exc.text, payload) or NOOP
    finally:
        backend.close()
    try:
        parse_reply(line)  # what we print is always in the grammar
    except ReplyError:
        return NOOP
    return line


def read_payload(source: str) -> dict[str, Any]:
    if source == "-":
        text = sys.stdin.read()
    else:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    payload = json.loads(text)
    menu = payload.get("menu") if isinstance(payload, dict) else None
    if not isinstance(menu, list) or not all(isinstance(e, dict) and "sid" in e and "aid" in e for e in menu):
        raise ValueError("the payload has no menu of {sid, aid} entries")
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="machina-policy-llm", description=__doc__.split("\n")[0])
    parser.add_argument("--env", help="env file with the backend settings (replaces MACHINA_ENV_FILE)")
    parser.add_argument("payload", help="the engine's payload file, or - for standard input")
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.env:
        environ["MACHINA_ENV_FILE"] = args.env
    try:
        payload = read_payload(args.payload)
    except (OSError, ValueError) as exc:
        print(f"machina-policy-llm: bad payload: {exc}", file=sys.stderr)
        return int(ExitCode.DATAERR)
    try:
        cfg = load(environ)
        log_setup("machina-policy-llm", cfg["MACHINA_LOG_LEVEL"], secrets=cfg.secret_values())
        line = decide(payload, cfg)
    except ConfigError as exc:
        print(f"machina-policy-llm: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    except LLMError as exc:
        print(f"machina-policy-llm: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

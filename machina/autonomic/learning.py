"""L3 Heal and L5 Curiosity: the model proposes one tool call, the toolhost runs it, a success becomes a skill.

- **Heal** takes the newest failed request not yet looked at and asks for a corrected call.
- **Curiosity** takes a capability gap (a tool the suite offers but has not used recently) that passes the
  relevance gate (a word of the tool's name appears in a person's recent request) and asks for a first call;
  at most ``curiosity_per_day`` per day with ``curiosity_cooldown_s`` between them (3/day and 2 h; 20 and
  10 min with DEV explore).

A skill is the call as canonical JSON (``lang: "json"``) with its SHA-256; the reward tracker of L4 rolls a
skill back by name when success drops after it appears.  The proposal is untrusted: it must name a tool the
toolhost lists, and the call goes through the toolhost's permission checks with no lease, so a tool that
needs approval is refused (nobody is there to say yes).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from machina.autonomic.thinking import Model, NoAnswer, ask_json
from machina.autonomic.toolcalls import ToolUse
from machina.clock import Clock
from machina.memory.streams import append

CALL_SCHEMA = {
    "type": "object",
    "required": ["aid", "inputs"],
    "properties": {
        "aid": {"type": "string", "maxLength": 128},
        "inputs": {"type": "object"},
        "reason": {"type": "string", "maxLength": 2000},
    },
}
HEAL_SYSTEM = (
    "A tool call of the Machina runtime failed. Propose ONE corrected call of one of the listed tools as JSON "
    '{"aid": ..., "inputs": {...}, "reason": ...}. Use only the listed tools and their input schemas.'
)
CURIOSITY_SYSTEM = (
    "Propose ONE safe, read-only first call of the given tool that shows what it can do, as JSON "
    '{"aid": ..., "inputs": {...}, "reason": ...}. Use exactly the given tool and its input schema.'
)
DAY = 86400.0
WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True)
class Attempt:
    acted: bool
    ok: bool
    reason: str
    skill: str | None = None


def propose_and_try(
    model: Model,
    tools: ToolUse,
    system: str,
    prompt: str,
    allowed: set[str],
    *,
    source: str,
    request: str,
    memory_dir: str,
    clock: Clock,
    fsync: bool,
) -> Attempt:
    try:
        answer = ask_json(model, system, prompt, CALL_SCHEMA)
    except NoAnswer as exc:
        return Attempt(False, False, str(exc))
    aid, inputs = str(answer.get("aid")), answer.get("inputs")
    if aid not in allowed or not isinstance(inputs, dict):
        return Attempt(False, False, f"the model proposed {aid[:80]!r}, which is not a tool it may use here")
    reply = tools.call(aid, inputs, why=f"{source}: {request}"[:500])
    if not reply.ok:
        return Attempt(True, False, f"the proposed call of {aid} failed ({reply.status}): {reply.error[:200]}")
    name = add_skill(memory_dir, aid, inputs, source=source, request=request, clock=clock, fsync=fsync)
    return Attempt(True, True, f"{aid} worked; saved as skill {name}", name)


def add_skill(
    memory_dir: str, aid: str, inputs: dict[str, Any], *, source: str, request: str, clock: Clock, fsync: bool
) -> str:
    code = json.dumps({"aid": aid, "inputs": inputs}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(code.encode()).hexdigest()
    name = f"{source}-{aid.split('.')[1].lower() if aid.count('.') >= 2 else 'tool'}-{digest[:8]}"
    record = {
        "name": name,
        "lang": "json",
        "code": code,
        "code_hash": digest,
        "source": source,
        "request": request[:500],
    }
    append(memory_dir, "skills", record, fsync=fsync, clock=clock)
    return name


def failure_key(entry: dict[str, Any]) -> str:
    record = entry.get("record") or {}
    raw = f"{entry.get('ts')}|{record.get('tool_used')}|{record.get('user_request')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def newest_unhealed(experiences: list[dict[str, Any]], healed: list[str]) -> dict[str, Any] | None:
    for entry in reversed(experiences):
        record = entry.get("record") or {}
        if record.get("success") is False and record.get("tool_used") and failure_key(entry) not in healed:
            return entry
    return None


def heal_prompt(entry: dict[str, Any], catalog: list[dict[str, Any]]) -> str:
    record = entry.get("record") or {}
    listed = [{"aid": t["aid"], "inputs_schema": t.get("inputs_schema", {})} for t in catalog]
    return json.dumps(
        {
            "failed_tool": record.get("tool_used"),
            "request": str(record.get("user_request"))[:1000],
            "error": str(record.get("result_preview"))[:1000],
            "tools": listed,
        },
        ensure_ascii=False,
    )


def relevant_gap(catalog: list[dict[str, Any]], experiences: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A runnable tool not used in ``experiences`` whose name shares words with a person's request there: the
    one sharing the most (FILE.READ before FILE.DIFF for "read the file"), the first listed among equals."""
    used = {(e.get("record") or {}).get("tool_used") for e in experiences}
    words: set[str] = set()
    for entry in experiences:
        record = entry.get("record") or {}
        if record.get("source") != "autonomic":
            words.update(WORD.findall(str(record.get("user_request", "")).lower()))
    best, best_shared = None, 0
    for tool in catalog:
        if tool["aid"] in used or int(tool.get("tier", 0)) > 0 or tool.get("implemented") is False:
            continue
        name_words = set(WORD.findall(tool["aid"].lower().replace("_", " ").replace(".", " "))) - {"aid"}
        shared = len(name_words & words)
        if shared > best_shared:
            best, best_shared = tool, shared
    return best


def curiosity_allowed(
    count_today: int, day_start: float, last: float, now: float, per_day: int, cooldown: float
) -> tuple[bool, str]:
    if now - day_start < DAY and count_today >= per_day:
        return False, f"curiosity limit reached ({per_day} per day)"
    if last and now - last < cooldown:
        return False, f"curiosity cooling down ({cooldown - (now - last):.0f} s left)"
    return True, ""

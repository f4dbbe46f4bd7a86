"""Approvals a job carries: the ``_leases`` key of a run request, and what a run records when it asks.

A job that stops because a tool call needs a lease (permission "ask", or MACHINA_LEASE_ENFORCE=1) lands in
the queue's ``asked/`` state; its attempt's result lists the calls that needed one (:func:`approval`).
``machina queue approve NAME`` issues one lease per listed call, bound to that call's inputs digest, and
puts them into the job's ``_leases``::

    "_leases": [{"aid": "AID.SHELL.EXEC.v1", "inputs_digest": "<64 hex>", "token": "mlease_..."}]

The engine presents a token only to the call with that AID and inputs digest (:func:`token_for`); the
toolhost spends it.  Tokens are secrets: :func:`without_tokens` is what logs, run logs, results and
``machina queue show --request`` see.  Only an operator puts leases into a job: a job started by a tool
(AID.QUEUE.ENQUEUE.v1) cannot carry any.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machina.audit.canonical import canonical
from machina.toolhost.leases import TOKEN_PREFIX, inputs_digest, is_digest

LEASES_KEY = "_leases"
MAX_LEASES = 64
MAX_TOKEN_CHARS = 200
_KEYS = frozenset({"aid", "inputs_digest", "token"})
#: A call's inputs are copied into the asked result (for the operator to read) up to this many characters.
INPUTS_SHOWN_MAX = 2000

ASKED = "asked"  # the call needed a lease it did not have
SPENT = "spent"  # the call ran on a lease: running the job again needs a new one


def leases_error(value: Any) -> str | None:
    """Why ``value`` is not a valid ``_leases`` list, or None."""
    if not isinstance(value, list) or len(value) > MAX_LEASES:
        return f"{LEASES_KEY} must be a list of at most {MAX_LEASES} leases"
    for index, item in enumerate(value):
        where = f"{LEASES_KEY}[{index}]"
        if not isinstance(item, dict) or set(item) != _KEYS:
            return f"{where} must be an object with exactly aid, inputs_digest and token"
        if not isinstance(item["aid"], str) or not item["aid"].startswith("AID."):
            return f"{where}.aid must be an AID"
        if not is_digest(item["inputs_digest"]):
            return f"{where}.inputs_digest must be a SHA-256 in hex"
        token = item["token"]
        if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return f"{where}.token must be a lease token ({TOKEN_PREFIX}...)"
    return None


def token_for(leases: Any, aid: str, inputs: Mapping[str, Any]) -> str | None:
    """The token of the lease carried for exactly this call (``aid`` with ``inputs``), or None."""
    if not isinstance(leases, list) or not leases:
        return None
    try:
        wanted = inputs_digest(aid, dict(inputs))
    except (TypeError, ValueError):
        return None
    for item in leases:
        if isinstance(item, dict) and item.get("aid") == aid and item.get("inputs_digest") == wanted:
            token = item.get("token")
            return token if isinstance(token, str) else None
    return None


def without_tokens(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with each carried lease reduced to its AID and inputs digest (what may be shown)."""
    shown = dict(body)
    leases = shown.get(LEASES_KEY)
    if leases is not None:
        shown[LEASES_KEY] = [
            {"aid": item.get("aid"), "inputs_digest": item.get("inputs_digest")}
            for item in (leases if isinstance(leases, list) else [])
            if isinstance(item, dict)
        ]
    return shown


def without_leases(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without ``_leases``: the request as its sender wrote it (what request digests cover)."""
    return {key: value for key, value in body.items() if key != LEASES_KEY}


def approval(aid: str, tier: int, inputs: Mapping[str, Any], status: str) -> dict[str, Any]:
    """One entry of a run's ``approvals``: a call that needed a lease (``asked``) or ran on one (``spent``).

    The inputs are copied (for the operator who approves) when short; the digest is what the lease binds.
    """
    entry: dict[str, Any] = {
        "aid": aid,
        "tier": tier,
        "inputs_digest": inputs_digest(aid, dict(inputs)),
        "status": status,
    }
    if len(canonical(dict(inputs))) <= INPUTS_SHOWN_MAX:
        entry["inputs"] = dict(inputs)
    return entry


def approvals_error(value: Any) -> str | None:
    """Why ``value`` is not a list of :func:`approval` entries, or None (it crossed a process boundary)."""
    if not isinstance(value, list) or len(value) > MAX_LEASES:
        return f"approvals must be a list of at most {MAX_LEASES} calls"
    for item in value:
        if not isinstance(item, dict):
            return "an approval is not an object"
        if not isinstance(item.get("aid"), str) or not is_digest(item.get("inputs_digest")):
            return "an approval lacks its aid or inputs_digest"
        tier = item.get("tier")
        if isinstance(tier, bool) or not isinstance(tier, int) or not 0 <= tier <= 3:
            return "an approval's tier is not 0..3"
        if item.get("status") not in (ASKED, SPENT):
            return "an approval's status is not asked or spent"
    return None

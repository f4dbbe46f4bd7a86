"""The policy reply grammar (DESIGN.md section 5), parsed strictly.

The whole of the driver's stdout, less leading and trailing ASCII whitespace, must be exactly one of::

    <PICK><SIDdddd><END>
    <PICK><SIDdddd><INP>{json object}</INP><END>
    <PICK><SIDdddd><INP64>{base64 of a json object}</INP64><END>
    <ASK_SUP><END>
    <NOOP><END>

The envelope is matched as a whole (anchored at both ends), and the patch is decoded by a real JSON parser
that refuses duplicate keys and NaN; nothing is ever found by counting braces (the earlier system did, see
DESIGN.md section 7).  A patch is an object; none of its keys, at any depth, may start with ``_``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from machina.audit.canonical import loads_strict
from machina.engine.selectors import ASK_SUP, NOOP, PICK, Selection

_REPLY = re.compile(
    r"<PICK><(?P<sid>SID[0-9]{4})>"
    r"(?:<INP>(?P<json>.*)</INP>|<INP64>(?P<b64>[A-Za-z0-9+/]*={0,2})</INP64>)?"
    r"<END>"
    r"|<(?P<word>ASK_SUP|NOOP)><END>",
    re.DOTALL,
)
_WHITESPACE = " \t\r\n"


class ReplyError(ValueError):
    """The reply is not in the grammar (the driver's failure code is ``garbage``)."""


class ReservedKeyError(ReplyError):
    """The patch tries to set a ``_`` key (failure code ``reserved_key``)."""


def parse_reply(text: str) -> Selection:
    match = _REPLY.fullmatch(text.strip(_WHITESPACE))
    if match is None:
        raise ReplyError(
            "not one of <PICK><SIDdddd>[<INP>..</INP>|<INP64>..</INP64>]<END>, <ASK_SUP><END>, <NOOP><END>"
        )
    if match["word"] == "NOOP":
        return Selection(NOOP)
    if match["word"] == "ASK_SUP":
        return Selection(ASK_SUP)
    patch = None
    if match["json"] is not None:
        patch = _object(match["json"])
    elif match["b64"] is not None:
        try:
            decoded = base64.b64decode(match["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ReplyError(f"INP64 is not base64 of UTF-8 text: {exc}") from None
        patch = _object(decoded)
    return Selection(PICK, match["sid"], patch)


def _object(text: str) -> dict[str, Any]:
    try:
        value = loads_strict(text)
        reserved = reserved_keys(value)
    except RecursionError:
        raise ReplyError("input patch is nested too deeply") from None
    except ValueError as exc:
        raise ReplyError(f"input patch is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ReplyError("input patch is not a JSON object")
    if reserved:
        raise ReservedKeyError(f"input patch sets reserved key(s) {', '.join(sorted(reserved))}")
    return value


def reserved_keys(value: Any, path: str = "") -> list[str]:
    """Every ``_``-prefixed key in ``value``, at any depth, as a path."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            where = f"{path}/{key}"
            if key.startswith("_"):
                found.append(where)
            found.extend(reserved_keys(child, where))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(reserved_keys(child, f"{path}/{index}"))
    return found

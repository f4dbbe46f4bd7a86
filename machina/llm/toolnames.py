"""The documented, reversible mapping between AIDs and the function names models see.

Function names of the OpenAI and Anthropic tool APIs allow only ``[A-Za-z0-9_-]`` (at most 64 characters);
AIDs (``AID.FILE.READ.v1``, ``AID.NET.HTTP_GET.v1``) contain dots and never a ``-``.  So:

    aid_to_function("AID.FILE.READ.v1")  == "FILE-READ-v1"      # drop "AID.", each "." becomes "-"
    function_to_aid("FILE-READ-v1")      == "AID.FILE.READ.v1"  # add "AID.", each "-" becomes "."

An AID with any other character, or one whose name would be longer than 64 characters, cannot be offered
as a native tool: :func:`aid_to_function` raises ``ValueError`` rather than invent a lossy name.
"""

from __future__ import annotations

import re

PREFIX = "AID."
MAX_FUNCTION_NAME = 64
_AID = re.compile(r"AID\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_FUNCTION = re.compile(r"[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*")


def aid_to_function(aid: str) -> str:
    """The function name for an AID; ``ValueError`` when the AID cannot be mapped."""
    if not _AID.fullmatch(aid):
        raise ValueError(f"{aid!r} is not an AID that maps to a function name (AID.NAME[.PART...])")
    name = aid[len(PREFIX) :].replace(".", "-")
    if len(name) > MAX_FUNCTION_NAME:
        raise ValueError(f"{aid!r} maps to a function name longer than {MAX_FUNCTION_NAME} characters")
    return name


def function_to_aid(name: str) -> str:
    """The AID a function name stands for; ``ValueError`` for a name no AID maps to."""
    if not _FUNCTION.fullmatch(name) or len(name) > MAX_FUNCTION_NAME:
        raise ValueError(f"{name!r} is not a function name of the AID mapping")
    return PREFIX + name.replace("-", ".")

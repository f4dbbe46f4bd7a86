"""Tool AIDs of MCP tools, and the digest of a server's tool definitions that an operator pins."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from machina.audit.canonical import canonical

AID_PREFIX = "AID.MCP."
_NOT_NAME = re.compile(r"[^A-Z0-9_]")
PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema")


def sanitize(name: str) -> str:
    """Upper-cased, every character outside ``[A-Z0-9_]`` replaced by ``_`` (AGENT.md section 7)."""
    return _NOT_NAME.sub("_", name.upper()) or "_"


def tool_aid(server: str, tool: str) -> str:
    return f"{AID_PREFIX}{sanitize(server)}.{sanitize(tool)}.v1"


def definitions_digest(tools: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of the names, titles, descriptions and schemas of every tool, in a canonical order.

    Any change to any of them (a description reworded to steer a model, a schema widened) changes it.
    """
    pinned = [{key: tool.get(key) for key in PINNED_FIELDS} for tool in tools]
    pinned.sort(key=canonical)
    return hashlib.sha256(canonical(pinned)).hexdigest()

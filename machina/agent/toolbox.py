"""The tools a session may offer the model, and the checks every proposed call passes before the toolhost.

The catalog is the toolhost's own listing (``tools.list``): what it can run, each tool's tier, inputs schema
and the permission answer for this configuration.  Tools the permission mode denies are not offered at all.
A call the model proposes is untrusted (AGENT.md faults 2, 7, 14): its name must map back to an offered
AID, and its inputs must fit that tool's schema, or it never reaches the toolhost; the model is told why
instead.  Whatever passes still goes through the toolhost, which checks permission and schema again and runs
the tool in its sandbox: this module adds checks, it never replaces one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import jsonschema

from machina.ipc.jsonlines import ServiceUnavailable
from machina.llm.toolnames import aid_to_function
from machina.llm.types import ToolSpec
from machina.toolapi import ToolReply

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"  # the toolhost did not answer: not a tool result
REFUSED = "refused"  # the session's own checks refused the call before the toolhost saw it
PREVIEW_CHARS = 300
DESCRIPTION_CHARS = 1000


class ToolhostLike(Protocol):
    """What the session needs of :class:`machina.toolhost.client.ToolhostClient`."""

    def call(
        self, aid: str, inputs: dict[str, Any], *, request_id: str | None = ..., lease_token: str | None = ...
    ) -> ToolReply: ...

    def list_tools(self) -> list[dict[str, Any]]: ...

    def issue_lease(
        self,
        aid: str,
        tier: int,
        ttl_ms: int,
        *,
        inputs: dict[str, Any] | None = ...,
        inputs_digest: str | None = ...,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Tool:
    aid: str
    name: str
    description: str
    tier: int
    permission: str  # allow | ask | deny, for this configuration
    tags: tuple[str, ...]
    schema: dict[str, Any]

    def spec(self) -> ToolSpec:
        text = (self.description or self.name)[:DESCRIPTION_CHARS]
        return ToolSpec(self.aid, f"{text} (tier {self.tier})", self.schema)


class Refusal(Exception):
    """A proposed call that failed the session's checks; the message goes back to the model."""


class Toolbox:
    def __init__(self, client: ToolhostLike) -> None:
        self.client = client
        self.tools: dict[str, Tool] = {}

    def refresh(self) -> None:
        """Read the toolhost's listing (ServiceUnavailable when it is not running)."""
        tools = {}
        for entry in self.client.list_tools():
            tool = _tool(entry)
            if tool is not None and tool.permission != "deny":
                tools[tool.aid] = tool
        self.tools = tools

    def offered(self) -> list[ToolSpec]:
        return [self.tools[aid].spec() for aid in sorted(self.tools)]

    def check(self, aid: str, inputs: Any) -> Tool:
        """The tool a proposed call names, when the call may be sent; :class:`Refusal` says why not."""
        tool = self.tools.get(aid)
        if tool is None:
            raise Refusal(f"there is no tool {aid!r} here; use one of the offered tools")
        if not isinstance(inputs, dict):
            raise Refusal(f"the arguments of {aid} must be a JSON object")
        try:
            jsonschema.validate(inputs, tool.schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "arguments"
            raise Refusal(f"the arguments of {aid} do not fit its schema at {where}: {exc.message[:300]}") from None
        except jsonschema.SchemaError:
            raise Refusal(f"{aid} has an unusable inputs schema") from None
        return tool

    def call(self, aid: str, inputs: dict[str, Any], *, request_id: str, lease_token: str | None = None) -> ToolReply:
        """Run through the toolhost; a toolhost that is down becomes a failed reply, not an exception."""
        try:
            return self.client.call(aid, inputs, request_id=request_id, lease_token=lease_token)
        except ServiceUnavailable as exc:
            return ToolReply(ok=False, status=UNAVAILABLE, error=f"toolhost unavailable: {exc}")


def _tool(entry: dict[str, Any]) -> Tool | None:
    aid = entry.get("aid")
    if not isinstance(aid, str):
        return None
    try:
        aid_to_function(aid)
    except ValueError:
        log.warning("tool %s cannot be offered to a model: its AID has no function name", aid)
        return None
    schema = entry.get("inputs_schema")
    return Tool(
        aid=aid,
        name=str(entry.get("name") or aid),
        description=str(entry.get("description") or ""),
        tier=int(entry.get("tier") or 0),
        permission=str(entry.get("permission") or "ask"),
        tags=tuple(str(t) for t in entry.get("tags") or ()),
        schema=schema if isinstance(schema, dict) else {"type": "object"},
    )


def preview(reply: ToolReply, limit: int = PREVIEW_CHARS) -> str:
    """A short, single-line view of a reply for events and experiences."""
    text = reply.error if not reply.ok else json.dumps(reply.output, sort_keys=True, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def result_for_model(reply: ToolReply, limit: int) -> str:
    """The tool message the model reads: status, error and output as JSON, capped at ``limit`` characters."""
    body: dict[str, Any] = {"ok": reply.ok, "status": reply.status}
    if reply.error:
        body["error"] = reply.error
    if reply.output:
        body["output"] = reply.output
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[:limit] + f"... [cut: {len(text) - limit} more characters]"
    return text

"""AID.NET.HTTP_GET.v1: an SSRF-defended GET (machina.net), run in the ``net`` sandbox profile.

The toolhost passes the configured limits (MACHINA_HTTP_*); a caller's ``timeout_ms`` and ``max_bytes``
can only lower them.  A refused target and a failed fetch are tool errors; a fetch that ran out of time is
a timeout.
"""

from __future__ import annotations

from typing import Any

from machina import toolapi
from machina.tools.base import ToolContext, ToolFailure, cap


def http_get(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    from machina.net.fetch import FetchError
    from machina.net.fetch import http_get as fetch
    from machina.net.ssrf import SsrfRefused

    params = ctx.params
    try:
        return fetch(
            inputs["url"],
            timeout_ms=cap(inputs.get("timeout_ms"), params["timeout_ms"]),
            max_bytes=cap(inputs.get("max_bytes"), params["max_bytes"]),
            allowed_hosts=tuple(params["allowed_hosts"]),
            default_deny=bool(params["default_deny"]),
        )
    except SsrfRefused as exc:
        raise ToolFailure(f"refused: {exc}") from None
    except FetchError as exc:
        status = toolapi.TIMEOUT if exc.timed_out else toolapi.TOOL_ERROR
        raise ToolFailure(str(exc), status=status) from None

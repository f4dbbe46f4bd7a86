"""AID.NET.WEB_SEARCH.v1: a web search through a SearXNG-compatible JSON endpoint (MACHINA_SEARCH_URL).

The request is ``GET {MACHINA_SEARCH_URL}/search?q=QUERY&format=json[&pageno=N][&language=L]``, sent by the
pinned fetch of machina.net (no redirects, no proxy, the HTTP tool's timeout and size cap) from the ``net``
sandbox profile.  The endpoint is operator configuration, like an LLM base URL: it may be a SearXNG on
loopback, so its address is not refused the way a caller's URL would be; the caller chooses only the
query, never the host.

Results are ``{"title", "url", "content"}``: web text, untrusted.  Each field is cut to a length, control
characters are removed, only http(s) result URLs are kept, and the reply says ``"untrusted": true``; what
a page says never reaches a tool or a permission except through a caller who asks again.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from machina import toolapi
from machina.tools.base import ToolContext, ToolFailure, cap

DEFAULT_RESULTS = 5
MAX_RESULTS = 20
TITLE_CHARS, URL_CHARS, CONTENT_CHARS = 300, 2000, 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def search_url(base: str, inputs: dict[str, Any]) -> str:
    params: dict[str, Any] = {"q": inputs["query"], "format": "json"}
    if inputs.get("page"):
        params["pageno"] = inputs["page"]
    if inputs.get("language"):
        params["language"] = inputs["language"]
    return base.rstrip("/") + "/search?" + urlencode(params)


def web_search(inputs: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    from machina.net.fetch import FetchError, fetch_pinned
    from machina.net.ssrf import SsrfRefused, configured_target

    params = ctx.params
    base = params.get("search_url")
    if not base:
        raise ToolFailure("no search provider: MACHINA_SEARCH_URL is not set")
    url = search_url(base, inputs)
    try:
        target = configured_target(url)
        reply = fetch_pinned(
            target,
            timeout_ms=cap(inputs.get("timeout_ms"), params["timeout_ms"]),
            max_bytes=params["max_bytes"],
        )
    except SsrfRefused as exc:
        raise ToolFailure(f"MACHINA_SEARCH_URL is not usable: {exc}") from None
    except FetchError as exc:
        status = toolapi.TIMEOUT if exc.timed_out else toolapi.TOOL_ERROR
        raise ToolFailure(f"the search provider failed: {exc}", status=status) from None
    results = parse_results(reply, inputs.get("max_results", DEFAULT_RESULTS))
    return {"query": inputs["query"], "results": results, "count": len(results), "untrusted": True}


def parse_results(reply: dict[str, Any], limit: int) -> list[dict[str, str]]:
    """The provider's results as clean ``{"title", "url", "content"}`` rows; ToolFailure for a bad answer."""
    if reply["status"] != 200:
        hint = " (is format=json enabled in its search.formats?)" if reply["status"] == 403 else ""
        raise ToolFailure(f"the search provider answered HTTP {reply['status']}{hint}")
    if reply["truncated"]:
        raise ToolFailure("the search provider's answer is larger than MACHINA_HTTP_STDOUT_MAX")
    try:
        doc = json.loads(reply["body"])
    except ValueError:
        raise ToolFailure("the search provider's answer is not JSON") from None
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ToolFailure("the search provider's answer has no results list")
    results = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        url = clean(row.get("url"), URL_CHARS)
        if not url.startswith(("http://", "https://")):
            continue
        results.append(
            {
                "title": clean(row.get("title"), TITLE_CHARS),
                "url": url,
                "content": clean(row.get("content"), CONTENT_CHARS),
            }
        )
        if len(results) >= limit:
            break
    return results


def clean(value: Any, limit: int) -> str:
    """Untrusted text as one plain line: no control or direction-changing characters, at most ``limit``."""
    if not isinstance(value, str):
        return ""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]

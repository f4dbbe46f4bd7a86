"""Chunks of the model's Markdown-ish text as Telegram HTML: code fences as <pre><code>, inline `code`, the
rest escaped.  Escaping does not change the visible length, so a chunk from :mod:`split` stays in the limit."""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^[ \t]*```([^\n`]*)$")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LANG = re.compile(r"[A-Za-z0-9_+-]{1,32}")


def to_html(text: str) -> str:
    out: list[str] = []
    in_code = False
    lines = text.split("\n")
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        match = _FENCE.match(line)
        if match and not in_code:
            lang = match.group(1).strip()
            attr = f' class="language-{lang}"' if _LANG.fullmatch(lang) else ""
            out.append(f"<pre><code{attr}>")
            in_code = True
            continue
        if match and in_code:
            if out and out[-1].endswith("\n"):
                out[-1] = out[-1][:-1]
            out.append("</code></pre>" + ("" if last else "\n"))
            in_code = False
            continue
        escaped = html.escape(line, quote=False)
        if not in_code:
            escaped = _INLINE_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
        out.append(escaped + ("" if last else "\n"))
    if in_code:
        out.append("</code></pre>")
    return "".join(out)

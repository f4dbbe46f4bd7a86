"""Is this configuration text a plain-text secret?  Shared by ``security_guardrails`` and the MCP config.

Secrets in operator JSON files (``mcp_servers.json``) must be ``${ENV_VAR}`` placeholders, filled from the
environment (``machina.env``) at run time.  :func:`classify` names the kind of secret a value looks like,
never the secret itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PLACEHOLDER = re.compile(r"^(?:Bearer\s+|Basic\s+|token\s+)?\$\{[A-Za-z_][A-Za-z0-9_]*\}$", re.IGNORECASE)
SECRET_KEY = re.compile(
    r"(?i)(token|secret|passw(or)?d|api[_-]?key|apikey|authorization|bearer|credential|private[_-]?key|access[_-]?key)"
)
BEARER = re.compile(r"(?i)\bbearer\s+(?!\$\{)[A-Za-z0-9._~+/=-]{8,}")
KNOWN_FORMATS = {
    "OpenAI/Anthropic-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    "GitHub token": re.compile(r"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{30,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "GitLab token": re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    "Telegram bot token": re.compile(r"\b[0-9]{8,10}:[A-Za-z0-9_-]{35}\b"),
}
URL_WITHOUT_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^@\s/]*(/\S*)?$", re.IGNORECASE)
NOT_SECRETS = {"true", "false", "none", "null", "required", "optional"}


def classify(key: str, value: str) -> str | None:
    """What kind of plain-text secret ``value`` is (under ``key``), or None when it is fine."""
    text = value.strip()
    if not text or PLACEHOLDER.match(text):
        return None
    for kind, pattern in KNOWN_FORMATS.items():
        if pattern.search(text):
            return f"plain-text {kind}"
    if BEARER.search(text):
        return "plain-text bearer token"
    if text.lower() in NOT_SECRETS or URL_WITHOUT_CREDENTIALS.match(text):
        return None
    if SECRET_KEY.search(key) and not text.startswith("$"):
        return f"plain-text value for a secret-looking key ({len(text)} chars)"
    return None


def walk(node: Any, where: str = "$", key: str = "") -> Iterator[tuple[str, str, str]]:
    """(json path, key, string value) for every string in a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{where}.{k}", str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{where}[{i}]", key)
    elif isinstance(node, str):
        yield where, key, node

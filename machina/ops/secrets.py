"""``security_guardrails``: no plain-text bearer tokens or API keys in configuration files.

Config files such as ``mcp_servers.json`` must name secrets as ``${ENV_VAR}`` placeholders, filled from the
environment (``machina.env``) at run time.  A finding names the file, the JSON path and the kind of secret,
never the secret itself.  ``machina.env`` is the one place secrets live in plain text, so instead its mode
is checked: no access for others.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from machina.cli.common import bootstrap, root_option
from machina.exitcodes import ExitCode, MachinaError
from machina.ops.paths import configured_root

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
CONFIG_NAMES = ("mcp_servers.json",)
SKIP_DIRS = {"queue", "logs", "memory", "run", ".git"}
ENV_FILE_DEFAULT = "/etc/machina/machina.env"


@dataclass(frozen=True)
class Finding:
    path: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.what}"


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


def check_json(path: Path) -> list[Finding]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MachinaError(f"{path}: {exc.strerror}", ExitCode.NOINPUT) from None
    except ValueError as exc:
        return [Finding(str(path), "$", f"not valid JSON ({exc}); cannot check it")]
    findings = []
    for where, key, value in walk(doc):
        kind = classify(key, value)
        if kind:
            findings.append(Finding(str(path), where, f"{kind}; use a ${{ENV_VAR}} placeholder"))
    return findings


def check_env_file_mode(path: Path) -> list[Finding]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        return [Finding(str(path), "mode", f"{oct(mode)} lets every user read the secrets in it; chmod 0640")]
    return []


def find_configs(base: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name in CONFIG_NAMES:
                yield Path(dirpath, name)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--env-file", metavar="PATH", default=None, help=f"machina.env whose mode to check (default {ENV_FILE_DEFAULT})."
)
@root_option
def security_guardrails(paths: tuple[str, ...], env_file: str | None, root: str | None) -> int:
    """Find plain-text bearer tokens and API keys in config files (read-only).

    PATHS are JSON files or directories searched for mcp_servers.json; by default MACHINA_ROOT (without
    queue/, logs/ and memory/) and /etc/machina.  Secrets must be ${ENV_VAR} placeholders.  Also checks
    that machina.env is not readable by others.  Findings never show the secret.  Exit status: 0 clean,
    1 findings (one per line on stdout), 66 a PATH does not exist.
    """
    cfg = bootstrap("security_guardrails", {"MACHINA_ROOT": os.path.abspath(root)} if root else None)
    if paths:
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise MachinaError(f"no such file or directory: {', '.join(missing)}", ExitCode.NOINPUT)
        bases = [Path(p) for p in paths]
    else:
        machina_root = configured_root(cfg)
        bases = [Path(machina_root.path)] if machina_root else []
        bases += [Path("/etc/machina")] if os.path.isdir("/etc/machina") else []
    files = sorted({f for b in bases for f in ([b] if b.is_file() else find_configs(b))})
    findings = [f for path in files for f in check_json(path)]
    env_path = Path(env_file or cfg.env_file or ENV_FILE_DEFAULT)
    if env_path.is_file() and str(env_path) != os.devnull:
        findings += check_env_file_mode(env_path)
    for finding in findings:
        click.echo(str(finding))
    click.echo(f"{len(findings)} finding(s) in {len(files)} config file(s)", err=True)
    return ExitCode.FAILURE if findings else ExitCode.OK

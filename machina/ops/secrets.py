"""``security_guardrails``: no plain-text bearer tokens or API keys in configuration files.

Config files such as ``mcp_servers.json`` must name secrets as ``${ENV_VAR}`` placeholders, filled from the
environment (``machina.env``) at run time.  A finding names the file, the JSON path and the kind of secret,
never the secret itself.  ``machina.env`` is the one place secrets live in plain text, so instead its mode
is checked: no access for others.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from machina.cli.common import bootstrap, root_option
from machina.config.secret_text import classify, walk
from machina.exitcodes import ExitCode, MachinaError
from machina.ops.paths import configured_root

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

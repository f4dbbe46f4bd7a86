"""Reader for ``machina.env``: the KEY=VALUE format systemd's ``EnvironmentFile=`` reads.

Supported, as systemd does: blank lines, comments starting with ``#`` or ``;``, whitespace around the key,
values in single or double quotes (double quotes understand ``\\"`` and ``\\\\``).  Anything else on a line
is an error with its line number, so a typo cannot silently drop a setting.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvFileError(ValueError):
    pass


def read_env_file(path: str) -> list[tuple[str, str, int]]:
    """Return (key, value, line number) for each assignment in the file."""
    with open(path, encoding="utf-8") as handle:
        return parse_env_text(handle.read())


def parse_env_text(text: str) -> list[tuple[str, str, int]]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise EnvFileError(f"line {number}: expected KEY=VALUE")
        entries.append((key, _unquote(value.strip(), number), number))
    return entries


def _unquote(value: str, number: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\([\"\\])", r"\1", value[1:-1])
    if value[:1] in "'\"":
        raise EnvFileError(f"line {number}: unterminated quote")
    return value

"""The 6-layer auto-fix of AID.CODE.EXEC.v1: fence strip → input() → f-string → colon → indent → print().

Applied only when the code as given does not compile, and never silently: the caller gets the names of the
layers that changed something and a unified diff.  Every layer but the fence strip is driven by the
compiler's own error: it changes the one line the SyntaxError names, and its change is kept only when the
error moves past that line (or goes away).  Nothing inside a string literal is rewritten except by the
f-string layer, which turns the one f-string the compiler rejected into ``"..." + str(expr) + "..."``; no
line is ever dropped except a Markdown fence line (```` ``` ```` / ```` ```python ````).

The layers, in order:

1. fence strip   Markdown fence lines around the code are removed.
2. input()       Python 2's ``raw_input`` becomes ``input`` (NAME tokens only, once the code compiles).
3. f-string      an f-string the compiler rejects becomes a concatenation with ``str()``.
4. colon         ``if x`` / ``def f()`` / ``else`` ... missing its ``:`` gets one.
5. indent        tabs in indentation become spaces; a block missing its indent is indented; an unexpected
                 indent is aligned with the line above.
6. print()       Python 2's ``print x`` becomes ``print(x)``.
"""

from __future__ import annotations

import difflib
import io
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass

MAX_ROUNDS = 50
FENCE = re.compile(r"^\s*```[A-Za-z0-9_+-]*\s*$")
BLOCK_KEYWORDS = re.compile(
    r"^(\s*)(if|elif|else|for|while|def|class|try|except|finally|with|async\s+def|async\s+for|async\s+with)\b(.*?)\s*$"
)
PRINT_STATEMENT = re.compile(r"^(\s*)print\s+(?![\s(=.\[])(.*?)\s*$")


@dataclass(frozen=True)
class Fixed:
    source: str
    layers: tuple[str, ...]
    diff: str
    compiles: bool
    error: str  # the compiler's error for the final source ("" when it compiles)


def compile_error(source: str) -> SyntaxError | None:
    try:
        compile(source, "<code>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return exc
    except ValueError as exc:  # NUL bytes
        return SyntaxError(str(exc))
    return None


def describe(error: SyntaxError) -> str:
    where = f"line {error.lineno}: " if error.lineno else ""
    return f"{type(error).__name__}: {where}{error.msg}"


def autofix(source: str) -> Fixed:
    """The source unchanged when it compiles, else the layers applied until it does (or nothing more helps)."""
    error = compile_error(source)
    if error is None:
        return Fixed(source, (), "", True, "")
    layers: list[str] = []
    current = strip_fences(source)
    if current != source:
        layers.append("fence")
    seen = {current}
    for _ in range(MAX_ROUNDS):
        error = compile_error(current)
        if error is None:
            break
        step = _one_fix(current, error, seen)
        if step is None:
            break
        current, layer = step
        if layer not in layers:
            layers.append(layer)
    error = compile_error(current)
    if error is None:
        renamed = rename_raw_input(current)
        if renamed != current:
            current = renamed
            layers.insert(1 if layers[:1] == ["fence"] else 0, "input")
    return Fixed(current, tuple(layers), unified_diff(source, current), error is None, describe(error) if error else "")


def _one_fix(source: str, error: SyntaxError, seen: set[str]) -> tuple[str, str] | None:
    """The first layer whose change at the error's line gets the compiler further (never back to a source
    already tried, so two layers cannot undo each other forever)."""
    lines = source.split("\n")
    if not error.lineno or error.lineno > len(lines):
        return None
    for name, layer in LINE_LAYERS:
        candidate = layer(lines, error.lineno - 1, error)
        if candidate is None or candidate == lines:
            continue
        text = "\n".join(candidate)
        if text in seen:
            continue
        after = compile_error(text)
        if after is None or (after.lineno or 0) >= error.lineno:
            seen.add(text)
            return text, name
    return None


def strip_fences(source: str) -> str:
    return "\n".join(line for line in source.split("\n") if not FENCE.match(line))


def rename_raw_input(source: str) -> str:
    """``raw_input`` → ``input`` where it is a name (never inside a string or comment)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return source
    lines = source.split("\n")
    for tok in reversed(tokens):
        if tok.type == tokenize.NAME and tok.string == "raw_input":
            row, col = tok.start[0] - 1, tok.start[1]
            lines[row] = lines[row][:col] + "input" + lines[row][col + len("raw_input") :]
    return "\n".join(lines)


def fix_fstring(lines: list[str], index: int, error: SyntaxError) -> list[str] | None:
    if "f-string" not in str(error.msg):
        return None
    line = lines[index]
    found = _scan_fstring(line)
    if found is None:
        return None
    begin, end, parts = found
    return [*lines[:index], line[:begin] + (" + ".join(parts) or '""') + line[end:], *lines[index + 1 :]]


def _scan_fstring(line: str) -> tuple[int, int, list[str]] | None:
    """The first f-string of the line (a quote inside ``{...}`` does not end it, as Python 3.12 reads it):
    where it starts and ends, and its parts as ``"literal"`` and ``str(expr)``."""
    match = re.search(r"(?<![A-Za-z0-9_])[fF](['\"])", line)
    if match is None:
        return None
    quote, i = match.group(1), match.end()
    parts: list[str] = []
    literal, expr, depth = "", "", 0
    while i < len(line):
        char = line[i]
        if depth == 0:
            if char == quote:
                if literal:
                    parts.append(quote + literal + quote)
                return match.start(), i + 1, parts
            if line.startswith("{{", i) or line.startswith("}}", i):
                literal += char
                i += 2
                continue
            if char == "{":
                if literal:
                    parts.append(quote + literal + quote)
                literal, depth = "", 1
            else:
                literal += char
        elif char in "{[(":
            depth += 1
            expr += char
        elif char in "}])":
            depth -= 1
            if depth == 0:
                parts.append(f"str({_expression(expr)})")
                expr = ""
            else:
                expr += char
        else:
            expr += char
        i += 1
    return None


def _expression(field: str) -> str:
    """The expression of a replacement field, without its ``!r`` conversion and ``:spec`` (the format is lost,
    which the diff shows)."""
    depth = 0
    for i, char in enumerate(field):
        depth += char in "[({"
        depth -= char in "])}"
        if depth == 0 and char == ":" and not field.startswith("=", i + 1):
            field = field[:i]
            break
    return re.sub(r"![rsa]\s*$", "", field.strip()).rstrip("=").strip()


def fix_colon(lines: list[str], index: int, error: SyntaxError) -> list[str] | None:
    line = lines[index]
    match = BLOCK_KEYWORDS.match(line)
    if match is None or line.rstrip().endswith(":") or "#" in line:
        return None
    return [*lines[:index], line.rstrip() + ":", *lines[index + 1 :]]


def fix_indent(lines: list[str], index: int, error: SyntaxError) -> list[str] | None:
    fixed = [_expand_indent_tabs(line) for line in lines]
    if fixed != lines:
        return fixed
    message = str(error.msg)
    if "expected an indented block" in message:
        previous = _indent_of(_previous_code_line(lines, index))
        target = index if len(_indent_of(lines[index])) <= len(previous) else None
        if target is None:
            return None
        return [*lines[:target], previous + "    " + lines[target].lstrip(), *lines[target + 1 :]]
    if "unexpected indent" in message or "unindent does not match" in message:
        previous = _indent_of(_previous_code_line(lines, index))
        return [*lines[:index], previous + lines[index].lstrip(), *lines[index + 1 :]]
    return None


def fix_print(lines: list[str], index: int, error: SyntaxError) -> list[str] | None:
    line = lines[index]
    match = PRINT_STATEMENT.match(line)
    if match is None:
        return None
    indent, rest = match.groups()
    return [*lines[:index], f"{indent}print({rest})", *lines[index + 1 :]]


def _expand_indent_tabs(line: str) -> str:
    stripped = line.lstrip(" \t")
    return line[: len(line) - len(stripped)].expandtabs(4) + stripped


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _previous_code_line(lines: list[str], index: int) -> str:
    for line in reversed(lines[:index]):
        if line.strip() and not line.lstrip().startswith("#"):
            return line
    return ""


def unified_diff(before: str, after: str) -> str:
    if before == after:
        return ""
    diff = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), "code (as given)", "code (as run)"
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in diff)


LineLayer = Callable[[list[str], int, SyntaxError], "list[str] | None"]
LINE_LAYERS: tuple[tuple[str, LineLayer], ...] = (
    ("fstring", fix_fstring),
    ("colon", fix_colon),
    ("indent", fix_indent),
    ("print", fix_print),
)

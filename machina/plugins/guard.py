"""MACHINA_GENESIS_GUARD: an AST check of a model-written plugin's imports and calls against allow-lists.

Not a list of forbidden substrings: the source is parsed and every import, every call of a builtin and every
dunder name or attribute is looked at.  Modules not on the allow-list are refused (``ctypes``, ``importlib``,
``subprocess``, ``os`` ... are simply not on it); a few more become allowed only with the capability that
would let them do anything in the sandbox anyway (``socket`` with NETWORK, ``subprocess`` with SHELL).
Builtins that run or load code (``eval``, ``exec``, ``compile``, ``__import__``, ``open``, ``getattr`` ...)
are refused; so is every dunder name or attribute (``__class__``, ``__subclasses__``, ``__globals__``, the
usual ways out of a restricted namespace), except ``__name__`` and ``__init__``.

The sandbox is what actually confines a plugin; the guard refuses early, with a readable reason, what the
sandbox would refuse late or what a reviewer should not have to read for.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable

SAFE_MODULES = frozenset(
    {
        "__future__", "base64", "binascii", "bisect", "calendar", "collections", "collections.abc", "copy", "csv",
        "dataclasses", "datetime", "decimal", "difflib", "enum", "fnmatch", "fractions", "functools", "hashlib",
        "heapq", "hmac", "html", "io", "itertools", "json", "math", "numbers", "operator", "random", "re",
        "statistics", "string", "textwrap", "time", "typing", "unicodedata", "uuid", "zlib",
    }
)  # fmt: skip
CAPABILITY_MODULES = {
    "NETWORK": frozenset({"socket", "ssl", "http", "http.client", "urllib", "urllib.parse", "urllib.request"}),
    "SHELL": frozenset({"subprocess", "shlex", "os", "os.path", "shutil", "signal"}),
    "GPU": frozenset({"numpy", "cupy"}),
}
SAFE_BUILTINS = frozenset(
    {
        "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr", "dict", "divmod",
        "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int", "isinstance", "issubclass",
        "iter", "len", "list", "map", "max", "min", "next", "object", "oct", "ord", "pow", "print", "range",
        "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "super", "tuple", "zip",
        "property", "staticmethod", "classmethod",
    }
)  # fmt: skip
ALLOWED_DUNDERS = frozenset({"__name__", "__init__", "__future__"})


def allowed_modules(capabilities: Iterable[str]) -> frozenset[str]:
    extra = [CAPABILITY_MODULES.get(cap, frozenset()) for cap in capabilities]
    return SAFE_MODULES.union(*extra)


def guard_problems(source: str, capabilities: Iterable[str], filename: str = "<plugin>") -> list[str]:
    """Every import, call and name the guard refuses, as ``line N: ...`` (empty: the source passes)."""
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return [f"does not parse: {exc}"]
    caps = frozenset(capabilities)
    modules = allowed_modules(caps)
    problems: list[str] = []
    for node in ast.walk(tree):
        problems += _node_problems(node, modules, caps)
    return sorted(set(problems), key=_line_order)


def _node_problems(node: ast.AST, modules: frozenset[str], caps: frozenset[str]) -> list[str]:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Import):
        return [_module_problem(line, alias.name, modules, caps) for alias in node.names if alias.name not in modules]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return [f"line {line}: relative import (a plugin is one file)"]
        name = node.module or ""
        return [] if name in modules else [_module_problem(line, name, modules, caps)]
    if isinstance(node, ast.Name) and _is_dunder(node.id) and node.id not in ALLOWED_DUNDERS:
        return [f"line {line}: the name {node.id} is not allowed"]
    if isinstance(node, ast.Attribute) and _is_dunder(node.attr) and node.attr not in ALLOWED_DUNDERS:
        return [f"line {line}: the attribute {node.attr} is not allowed"]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if hasattr(builtins, name) and name not in SAFE_BUILTINS and not _is_exception(name):
            return [f"line {line}: calling the builtin {name}() is not allowed"]
    return []


def _module_problem(line: int, name: str, modules: frozenset[str], caps: frozenset[str]) -> str:
    needs = sorted(cap for cap, extra in CAPABILITY_MODULES.items() if name in extra and cap not in caps)
    if needs:
        return f"line {line}: import of {name} needs the {needs[0]} capability, which the plugin does not declare"
    return f"line {line}: import of {name} is not allowed (not on the Genesis guard's allow-list)"


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_exception(name: str) -> bool:
    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException)


def _line_order(problem: str) -> tuple[int, str]:
    head = problem.split(":", 1)[0]
    return (int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0, problem)

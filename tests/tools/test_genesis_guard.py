"""The Genesis guard (machina.plugins.guard): imports and calls against allow-lists, read from the AST."""

from __future__ import annotations

import pytest

from machina.plugins.guard import guard_problems

CLEAN = """
import json, re
from collections import Counter
def run(inputs, host):
    words = re.findall(r"\\w+", inputs["text"])
    return {"top": Counter(words).most_common(1), "n": len(words), "doc": json.dumps(sorted(set(words)))}
"""


def test_a_plain_plugin_passes() -> None:
    assert guard_problems(CLEAN, []) == []


@pytest.mark.parametrize(
    ("source", "caps", "problem"),
    [
        ("import ctypes", ["NETWORK", "SHELL"], "line 1: import of ctypes is not allowed"),
        ("import socket", [], "line 1: import of socket needs the NETWORK capability"),
        ("from socket import create_connection", ["FILE_READ"], "needs the NETWORK capability"),
        ("import subprocess", ["NETWORK"], "import of subprocess needs the SHELL capability"),
        ("import os.path", [], "import of os.path needs the SHELL capability"),
        ("import importlib", ["SHELL"], "import of importlib is not allowed"),
        ("from . import sibling", [], "relative import"),
        ("x = eval('1')", [], "calling the builtin eval() is not allowed"),
        ("exec('import os')", [], "calling the builtin exec() is not allowed"),
        ("m = __import__('os')", [], "the name __import__ is not allowed"),
        ("f = open('/etc/passwd')", [], "calling the builtin open() is not allowed"),
        ("g = getattr(object, 'x')", [], "calling the builtin getattr() is not allowed"),
        ("s = ().__class__.__bases__[0].__subclasses__()", [], "the attribute __subclasses__ is not allowed"),
        ("b = __builtins__", [], "the name __builtins__ is not allowed"),
    ],
)
def test_refused(source: str, caps: list[str], problem: str) -> None:
    problems = guard_problems(source, caps)
    assert any(problem in p for p in problems), problems


def test_capabilities_unlock_their_modules_and_substrings_do_not_matter() -> None:
    assert guard_problems("import socket\nimport urllib.request", ["NETWORK"]) == []
    assert guard_problems("import subprocess", ["SHELL"]) == []
    text = 'NOTE = "import ctypes; eval(x); __import__"\ndef run(inputs, host):\n    return {"note": NOTE}\n'
    assert guard_problems(text, []) == []  # words in a string are not imports or calls
    assert guard_problems("raise ValueError('bad')", []) == []  # exceptions are fine to raise


def test_source_that_does_not_parse_is_a_problem() -> None:
    assert guard_problems("def run(:", [])[0].startswith("does not parse")

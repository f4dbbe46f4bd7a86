"""The 6-layer auto-fix of AID.CODE.EXEC.v1: each layer, what it never touches, and what it gives up on."""

from __future__ import annotations

import pytest

from machina.tools.autofix import autofix, compile_error


def test_code_that_compiles_is_left_alone_even_when_a_layer_would_match() -> None:
    source = "raw_input = input\nprint('```')\n"
    fixed = autofix(source)
    assert fixed.source == source and fixed.layers == () and fixed.diff == "" and fixed.compiles


@pytest.mark.parametrize(
    ("source", "layer", "expected"),
    [
        ("```python\nprint('hi')\n```", "fence", "print('hi')"),
        ("if True\n    x = 1\n", "colon", "if True:\n    x = 1\n"),
        ("def f(a)\n    return a\n", "colon", "def f(a):\n    return a\n"),
        ("if True:\nx = 1\n", "indent", "if True:\n    x = 1\n"),
        ("x = 1\n    y = 2\n", "indent", "x = 1\ny = 2\n"),
        ("print 'a:b'\n", "print", "print('a:b')\n"),
        ('d = {"a": 1}\nprint(f"v={d["a"]}!")\n', "fstring", 'd = {"a": 1}\nprint("v=" + str(d["a"]) + "!")\n'),
    ],
)
def test_each_layer_fixes_what_it_is_for(source: str, layer: str, expected: str) -> None:
    assert compile_error(source) is not None
    fixed = autofix(source)
    assert fixed.compiles and fixed.source == expected and layer in fixed.layers
    assert fixed.diff.startswith("--- code (as given)\n+++ code (as run)\n")


def test_layers_combine_and_input_renames_only_names() -> None:
    source = "name = raw_input('raw_input? ')\nif name\nprint 'raw_input' , name\n"
    fixed = autofix(source)
    assert fixed.compiles
    assert fixed.source == "name = input('raw_input? ')\nif name:\n    print('raw_input' , name)\n"
    assert set(fixed.layers) == {"input", "colon", "indent", "print"}


def test_string_literals_and_lines_are_kept() -> None:
    source = "s = '''\nif x\n  print y\n'''\nprint s\n"  # the broken-looking lines are inside a string
    fixed = autofix(source)
    assert fixed.compiles and fixed.layers == ("print",)
    assert fixed.source == "s = '''\nif x\n  print y\n'''\nprint(s)\n"
    assert fixed.source.count("\n") == source.count("\n")


def test_code_no_layer_can_fix_is_reported_not_mangled() -> None:
    fixed = autofix("Here is the code you asked for:")
    assert not fixed.compiles and fixed.source == "Here is the code you asked for:" and fixed.layers == ()
    assert fixed.error.startswith("SyntaxError: line 1:")


def test_a_nul_byte_is_a_compile_error_not_a_crash() -> None:
    assert not autofix("print(1)\x00").compiles

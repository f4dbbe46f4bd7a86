"""Man pages: lint clean, generated parts current, and matching the --help of what they document."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from machina.cli import COMMANDS
from machina.cli.config_cmd import render_template
from machina.cli.up_cmd import serve, status, up
from machina.ops.manpages import EXIT_BEGIN, EXIT_END, env_page, exit_codes, with_exit_codes
from tests.conftest import CHECKOUT, run_bin

MAN = CHECKOUT / "man"
PAGES = sorted(p for p in MAN.iterdir() if re.fullmatch(r".+\.[1-8]", p.name))


# The pages this part writes are held to mandoc's STYLE level too (e.g. no text line over 80 bytes);
# every page must have no WARNING or worse from mandoc and nothing at all from groff -ww.
OWN_PAGES = {"machina.1", "machina.7", "machina.env.5", "machina-maintenance.8"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_is_lint_clean(page: Path) -> None:
    if not shutil.which("mandoc") and not shutil.which("groff"):
        pytest.skip("neither mandoc nor groff is installed")
    if shutil.which("mandoc"):
        level = [] if page.name in OWN_PAGES else ["-W", "warning"]
        result = subprocess.run(["mandoc", "-T", "lint", *level, str(page)], capture_output=True, text=True, timeout=60)
        assert result.stdout + result.stderr == "", result.stdout + result.stderr
    if shutil.which("groff"):
        result = subprocess.run(["groff", "-ww", "-z", "-man", str(page)], capture_output=True, text=True, timeout=60)
        assert result.stderr == "", result.stderr


def test_own_pages_exist() -> None:
    assert {p.name for p in PAGES} >= OWN_PAGES


def test_lint_catches_a_broken_page(tmp_path: Path) -> None:
    if not shutil.which("mandoc"):
        pytest.skip("mandoc is not installed")
    bad = tmp_path / "bad.7"
    bad.write_text(".TH BAD 7\n.SH NAME\nbad \\- x\n.SH DESCRIPTION\n.BR\n")
    result = subprocess.run(["mandoc", "-T", "lint", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.stdout + result.stderr != ""


def test_machina_env_5_is_generated_from_the_variables() -> None:
    """After adding a variable: scripts/gen_manpages.py."""
    assert (MAN / "machina.env.5").read_text() == env_page()


def test_machina_7_lists_the_current_exit_codes() -> None:
    """After adding an exit code: scripts/gen_manpages.py."""
    page = (MAN / "machina.7").read_text()
    assert EXIT_BEGIN in page and EXIT_END in page
    assert page == with_exit_codes(page)
    for value, name, _ in exit_codes():
        assert f".B {value}\n{name}." in page


def test_shipped_machina_env_is_the_template() -> None:
    """etc/machina/machina.env is `machina config template` (regenerate it with that command)."""
    assert (CHECKOUT / "etc" / "machina" / "machina.env").read_text() == render_template()
    result = run_bin("machina", "config", "template")
    assert result.returncode == 0 and result.stdout == render_template()


def _help_commands() -> list[str]:
    result = run_bin("machina", "--help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("Commands:", 1)[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]


def test_machina_1_documents_every_subcommand() -> None:
    page = (MAN / "machina.1").read_text()
    documented = set(re.findall(r"^\.B machina (\S+)", page, re.MULTILINE))
    shown = _help_commands()
    assert shown, "machina --help lists no command"
    assert set(shown) <= documented, set(shown) - documented
    assert set(COMMANDS) <= documented, set(COMMANDS) - documented


@pytest.mark.parametrize("command", [up, serve, status], ids=["up", "serve", "status"])
def test_machina_1_shows_every_option_of_up_serve_status(command: click.Command) -> None:
    page = (MAN / "machina.1").read_text().replace("\\-", "-")
    entry = page.split(f".B machina {command.name}", 1)[1].split("\n.TP", 1)[0]
    for param in command.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--") and opt != "--help":
                assert opt in entry, f"machina {command.name}: {opt} not in machina(1)"


CHECKOUT_ONLY = ("_", "gen_", "quickstart")  # helpers and scripts that need a source checkout
SCRIPTS = sorted(
    p for p in (CHECKOUT / "scripts").iterdir() if p.suffix in (".py", ".sh") and not p.name.startswith(CHECKOUT_ONLY)
)


def test_maintenance_8_names_every_script_and_its_options() -> None:
    page = (MAN / "machina-maintenance.8").read_text().replace("\\-", "-")
    for script in SCRIPTS:
        if script.name == "ops.py":
            continue  # the engine behind ops_*.sh
        assert script.name in page, script.name
        if script.suffix == ".py" or script.name.startswith("ops_"):
            result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            for opt in set(re.findall(r"^\s+(--[a-z-]+)", result.stdout, re.MULTILINE)) - {"--help"}:
                assert opt in page, f"{script.name}: {opt} not in machina-maintenance(8)"

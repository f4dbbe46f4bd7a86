"""`make install PREFIX=... DESTDIR=...` into a temporary directory: every part lands, substituted, usable."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from machina.cli.config_cmd import render_template
from machina.entrypoints import ENTRY_POINTS
from tests.conftest import CHECKOUT

PREFIX = "/usr/local"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("wheel") is None, reason="the venv lacks 'wheel' (make setup installs the dev extras)"
)


def own_distribution() -> str:
    """Where this Python's own `machina` distribution lives (empty when there is none)."""
    probe = (
        "import importlib.metadata as m\n"
        "try: print(m.distribution('machina').locate_file(''))\n"
        "except Exception: pass"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd="/")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    before = own_distribution()
    result = make_install(dest)
    assert result.returncode == 0, result.stdout + result.stderr
    # A staged install must leave the installing Python alone (pip would uninstall its editable machina).
    assert own_distribution() == before
    return dest


def make_install(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "install",
            f"PREFIX={PREFIX}",
            f"DESTDIR={dest}",
            f"PYTHON={sys.executable}",
            "PIP_INSTALL_FLAGS=--no-build-isolation --no-index --no-cache-dir",
        ],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def site_packages(dest: Path) -> Path:
    (found,) = (dest / PREFIX.lstrip("/") / "lib").glob("python3*/*-packages")
    return found


def run_installed(dest: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site_packages(dest)), "MACHINA_ENV_FILE": "/dev/null"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd="/")


def test_executables_are_installed_and_run(installed: Path) -> None:
    bindir = installed / PREFIX.lstrip("/") / "bin"
    for name in ENTRY_POINTS:
        assert os.access(bindir / name, os.X_OK), name
    result = run_installed(installed, [str(bindir / "machina"), "--version"])
    assert result.returncode == 0 and "0.1.0" in result.stdout, result.stderr
    assert (site_packages(installed) / "machina" / "data" / "toolpacks" / "builtin" / "manifest.json").is_file()


def test_units_point_at_the_installed_executables(installed: Path) -> None:
    unitdir = installed / PREFIX.lstrip("/") / "lib" / "systemd" / "system"
    shipped = sorted(p.name for p in (CHECKOUT / "systemd").iterdir())
    assert sorted(p.name for p in unitdir.iterdir()) == shipped
    for unit in unitdir.iterdir():
        text = unit.read_text()
        assert "@BINDIR@" not in text and "@LIBEXECDIR@" not in text, unit.name
        for line in text.splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                program = line.split("=", 1)[1].split()[0]
                assert program.startswith(PREFIX + "/"), line
                assert (installed / program.lstrip("/")).exists(), line
        assert stat.S_IMODE(unit.stat().st_mode) == 0o644


def test_maintenance_scripts_run_from_libexec(installed: Path) -> None:
    libexec = installed / PREFIX.lstrip("/") / "libexec" / "machina"
    for script in (CHECKOUT / "scripts").iterdir():
        checkout_only = script.name.startswith(("_", "gen_", "quickstart"))  # need a source checkout
        if script.suffix in (".py", ".sh"):
            assert os.access(libexec / script.name, os.X_OK) != checkout_only, script.name
    first = (libexec / "validate_aid_refs.py").read_text().splitlines()[0]
    assert first == f"#!{sys.executable}"  # the Python that installed the package, as pip does for bin/
    result = run_installed(installed, [str(libexec / "validate_aid_refs.py"), str(CHECKOUT / "machina")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_man_pages_sysusers_and_cron(installed: Path) -> None:
    env_file = installed / "etc" / "machina" / "machina.env"
    assert env_file.read_text() == render_template()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
    secrets = installed / "etc" / "machina" / "secrets"  # D2: one file of secrets per unit, root's alone
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert (installed / "etc" / "machina" / "policies").is_dir()  # D1: the policy scripts, outside the root
    mandir = installed / PREFIX.lstrip("/") / "share" / "man"
    for page in (CHECKOUT / "man").iterdir():
        assert (mandir / f"man{page.suffix[1:]}" / page.name).read_text() == page.read_text()
    sysusers = installed / PREFIX.lstrip("/") / "lib" / "sysusers.d" / "machina.conf"
    assert sysusers.read_text().splitlines()[-1].startswith("u machina ")
    cron = (installed / PREFIX.lstrip("/") / "share" / "doc" / "machina" / "machina.cron.example").read_text()
    assert "@LIBEXECDIR@" not in cron and f"{PREFIX}/libexec/machina/ops_healthcheck.sh" in cron


def test_reinstall_keeps_the_operators_machina_env(installed: Path) -> None:
    env_file = installed / "etc" / "machina" / "machina.env"
    env_file.write_text("MACHINA_PROFILE=prod\n")
    result = make_install(installed)
    assert result.returncode == 0, result.stderr
    assert env_file.read_text() == "MACHINA_PROFILE=prod\n"

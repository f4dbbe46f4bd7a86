"""machina-enqueued on the command line, through /bin/sh: help, bad configuration, a port in use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from machina import config
from tests.conftest import bin_env, run_bin


def test_help_through_a_shell() -> None:
    proc = run_bin("machina-enqueued", "--help")
    assert proc.returncode == 0, proc.stderr
    for text in ("--host", "--port", "--socket", "--root", "POST /enqueue", "LISTEN_FDS", "MACHINA_API_TOKEN"):
        assert text in proc.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MACHINA_API_PORT": "99999"}, "MACHINA_API_PORT='99999': expected an integer from 1 to 65535"),
        ({"MACHINA_API_HEADER_TIMEOUT_MS": "soon"}, "MACHINA_API_HEADER_TIMEOUT_MS='soon': expected an integer in ms"),
        ({"MACHINA_API_HMAC_TTL_SEC": "0"}, "MACHINA_API_HMAC_TTL_SEC='0'"),
        ({"MACHINA_API_SOCKET": "relative.sock"}, "MACHINA_API_SOCKET='relative.sock': expected an absolute path"),
    ],
)
def test_bad_configuration_exits_78(machina_root: Path, env: dict[str, str], expected: str) -> None:
    proc = run_bin("machina-enqueued", env=bin_env(MACHINA_ROOT=str(machina_root), **env))
    assert proc.returncode == 78, proc.stderr
    assert expected in proc.stderr and proc.stdout == ""


def test_missing_root_exits_78(tmp_path: Path) -> None:
    proc = run_bin("machina-enqueued", "--root", str(tmp_path / "nope"))
    assert proc.returncode == 78 and "does not exist" in proc.stderr


def test_bad_port_option_exits_78(machina_root: Path) -> None:
    proc = run_bin("machina-enqueued", "--port", "http", "--root", str(machina_root))
    assert proc.returncode == 78 and "MACHINA_API_PORT='http'" in proc.stderr


def test_unknown_option_exits_64() -> None:
    assert run_bin("machina-enqueued", "--frobnicate").returncode == 64


def test_a_port_in_use_exits_69_before_ready(machina_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_bin(
            "machina-enqueued",
            "--port",
            str(port),
            env=bin_env(MACHINA_ROOT=str(machina_root), MACHINA_API_TOKEN="x" * 20),
        )
    assert proc.returncode == 69, proc.stderr
    assert f"cannot listen on 127.0.0.1 port {port}" in proc.stderr and "machina-enqueued ready" not in proc.stderr
    assert "x" * 20 not in proc.stderr


BAD_VALUES = [
    ("MACHINA_API_HEADER_TIMEOUT_MS", "50", "from 100 to 600000"),
    ("MACHINA_API_BODY_TIMEOUT_MS", "1e3", "an integer in ms"),
    ("MACHINA_API_KEEPALIVE_TIMEOUT_MS", "-1", "from 100 to 600000"),
    ("MACHINA_API_MAX_HEADER_BYTES", "100", "from 1024 to"),
    ("MACHINA_API_MAX_CONNECTIONS", "0", "from 1 to 100000"),
    ("MACHINA_API_THREADS", "1000", "from 1 to 512"),
    ("MACHINA_API_SHUTDOWN_TIMEOUT_MS", "forever", "an integer in ms"),
    ("MACHINA_API_SOCKET", "run/x.sock", "an absolute path"),
    ("MACHINA_API_PORT", "0", "from 1 to 65535"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_bad_serve_values_name_the_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"MACHINA_ENV_FILE": "/dev/null", name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and expected in message


def test_secrets_are_not_echoed_in_configuration_errors() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"MACHINA_ENV_FILE": "/dev/null", "MACHINA_API_TOKEN": "line1\nline2-secret"})
    assert "line2-secret" not in str(caught.value) and "<secret>" in str(caught.value)


def test_man_page_is_lint_clean_and_matches_help() -> None:
    import re
    import shutil
    import subprocess

    from tests.conftest import CHECKOUT

    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (make setup installs it)")
    page = CHECKOUT / "man" / "machina-enqueued.8"
    lint = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(page)], capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr
    text = page.read_text()
    help_text = run_bin("machina-enqueued", "--help").stdout
    for option in sorted(set(re.findall(r"--[a-z-]+", help_text))):
        assert f"Fl {option[1:]}" in text, f"{option} of --help is missing from the man page"
    from machina.config import VARIABLES

    for name, var in VARIABLES.items():
        if var.section == "serve" and name.startswith("MACHINA_API_"):
            assert name in text, f"{name} is not documented in machina-enqueued(8)"

"""Offline checks of every unit (safe for `make test`): `systemd-analyze verify` with empty stderr, the
exposure score of `systemd-analyze security --offline=true`, and the directives the issue requires."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from machina_units import (
    CHECKOUT,
    DAEMONS,
    DEFAULT_CEILING,
    EXPOSURE_CEILING,
    UNIT_DIR,
    directives,
    render_all,
    seconds,
    unit_files,
)

from machina.entrypoints import ENTRY_POINTS
from machina.up.components import AGENTS, SERVERS, WORKER

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
SERVICES = [p.name for p in unit_files() if p.suffix == ".service"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("units")
    render_all(dest)
    return dest


@needs_analyze
@pytest.mark.parametrize("unit", [p.name for p in unit_files()])
def test_verify_is_clean(rendered: Path, unit: str) -> None:
    """verify only warns about unknown keys and bad values (exit 0), so the test is on stderr."""
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(rendered / unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@needs_analyze
@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure(rendered: Path, unit: str) -> None:
    ceiling = EXPOSURE_CEILING.get(unit, DEFAULT_CEILING)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--threshold={int(ceiling * 10)}", str(rendered / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= ceiling, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is only a warning (exit 0), on stderr."""
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nProtectSystme=strict\n")
    result = subprocess.run([ANALYZE, "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "Unknown key 'ProtectSystme' in section [Service]" in result.stderr


REQUIRED = {
    "Type": "notify",
    "Restart": "on-failure",
    "User": "machina",
    "StateDirectory": "machina",
    "RuntimeDirectory": "machina",
    "ProtectSystem": "strict",
    "ReadWritePaths": "%S/machina",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "CapabilityBoundingSet": "",
    "KillSignal": "SIGTERM",
}
PRESENT = ("WatchdogSec", "TimeoutStopSec", "RestrictAddressFamilies", "RestrictNamespaces", "MemoryMax", "TasksMax")


# What bubblewrap needs, and only in the units that start sandboxes: the tool host, and the worker and embed
# services for the policy driver and the embedding command (each is explained in the unit and in machina(7)).
BUBBLEWRAP_EXCEPTIONS = {"ProtectKernelTunables": "no", "ProtectHostname": "no"}
SANDBOXING = ("machina-toolhost.service", "machina-worker@.service", "machina-embed.service")
# D2: the secrets each unit needs, from a file of its own; machina.env, read by every unit, holds none.
SECRET_FILES = {
    "machina-enqueued.service": "enqueued",
    "machina-worker@.service": "worker",
    "machina-autonomic.service": "autonomic",
    "machina-telegram.service": "telegram",
}


@pytest.mark.parametrize("unit", DAEMONS)
def test_daemons_carry_the_required_directives(unit: str) -> None:
    service = directives(UNIT_DIR / unit)["Service"]
    exceptions = BUBBLEWRAP_EXCEPTIONS if unit in SANDBOXING else {}
    for key, value in {**REQUIRED, "ProtectHostname": "yes", **exceptions}.items():
        assert service.get(key) == [value], f"{unit}: {key}={value} missing"
    for key in PRESENT:
        assert key in service, f"{unit}: {key}= missing"
    assert service["SystemCallFilter"][0].startswith("@system-service")
    assert "78" in service["RestartPreventExitStatus"]
    unit_section = directives(UNIT_DIR / unit)["Unit"]
    assert "StartLimitBurst" in unit_section and "StartLimitIntervalSec" in unit_section
    assert unit_section["PartOf"] == ["machina.target"]


def test_only_the_units_that_start_sandboxes_may_create_namespaces() -> None:
    for unit in DAEMONS:
        namespaces = directives(UNIT_DIR / unit)["Service"]["RestrictNamespaces"]
        expected = ["user mnt pid ipc uts net cgroup"] if unit in SANDBOXING else ["yes"]
        assert namespaces == expected, unit


@pytest.mark.parametrize("unit", DAEMONS)
def test_d2_each_unit_reads_only_its_own_secrets(unit: str) -> None:
    files = directives(UNIT_DIR / unit)["Service"]["EnvironmentFile"]
    own = [f"-/etc/machina/secrets/{SECRET_FILES[unit]}.env"] if unit in SECRET_FILES else []
    assert files == ["-/etc/machina/machina.env", *own], unit


@pytest.mark.parametrize("unit", DAEMONS)
def test_execstart_runs_the_executable_with_its_fixed_command_line(unit: str) -> None:
    service = directives(UNIT_DIR / unit)["Service"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    name = argv[0].removeprefix("@BINDIR@/")
    assert name in ENTRY_POINTS and (CHECKOUT / "bin" / name).exists()
    assert argv[1:] == (["--id", "%i"] if name == "machina-worker" else [])


def test_timings_agree_with_machina_up() -> None:
    """machina up supervises with the units' watchdog, start and stop timeouts."""
    for exe, unit, _wave, watchdog, start, stop in [*SERVERS.values(), WORKER, *AGENTS.values()]:
        service = directives(UNIT_DIR / unit)["Service"]
        assert seconds(service["WatchdogSec"][0]) == watchdog, unit
        assert seconds(service["TimeoutStopSec"][0]) == stop, unit
        assert seconds(service.get("TimeoutStartSec", ["90"])[0]) == start, unit
        assert exe in service["ExecStart"][0]


def test_the_target_wants_every_daemon_and_socket() -> None:
    wants = " ".join(directives(UNIT_DIR / "machina.target")["Unit"]["Wants"]).split()
    for unit in DAEMONS:
        name = unit.replace("@.service", "@1.service")
        assert name in wants, name
        socket = unit.replace(".service", ".socket")
        if (UNIT_DIR / socket).exists():
            assert socket in wants, socket


def test_every_timer_has_its_service_and_every_script_exists() -> None:
    for timer in UNIT_DIR.glob("*.timer"):
        service = UNIT_DIR / timer.name.replace(".timer", ".service")
        assert service.exists(), service
        exec_start = directives(service)["Service"]["ExecStart"][0].split()[0]
        assert (CHECKOUT / "scripts" / exec_start.removeprefix("@LIBEXECDIR@/")).exists(), exec_start

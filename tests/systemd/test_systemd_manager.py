"""The units under a real `systemd --user` manager (opt-in: `make test-systemd`).

Set up exactly as docs/spec/SYSTEMD-TESTING.md says (machina_manager.UserManager): a fresh cgroup, a private
mount namespace, never systemd as PID 1.  The units are the shipped ones with @BINDIR@ pointing at small
shims; two adaptations to this machine, both outside the units' own directives:

- the checkout's interpreter lives under /root (mode 0700, and hidden by ProtectHome=), which the machina
  user cannot reach, so the test builds a venv of the distribution's /usr/bin/python3 whose site-packages
  are hard links of the checkout venv's, plus a .pth naming the checkout: an installed-like interpreter
  (the tool host's sandbox runs ``python -I``, which ignores PYTHONPATH);
- there is no journal in this mode, so a drop-in sends each unit's output to a file, and the HTTP socket
  listens on a free port instead of 8080.

What is checked: the hardened units run a Type=notify Python service to READY and restart it when it hangs
(with a stand-in, so the hardening is proven whatever has landed); bubblewrap works inside the tool
host's sandbox; each real executable reaches READY; the watchdog restarts a hung real service; a job flows
from curl to done/; `machina status --user` sees the units; stopping machina.target leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from machina_manager import ManagerError, UserManager, unavailable_reason
from machina_units import CHECKOUT, DAEMONS, UNIT_DIR, render

from machina.entrypoints import ENTRY_POINTS
from tests.ops.supervised import SAMPLE_JOB, SAMPLE_LOG, curl_enqueue, free_port, wait_for_path
from tests.ops.supervised import built as module_built

SYSTEM_PYTHON = "/usr/bin/python3"  # the base of the test venv (see the module's docstring)
TOKEN = "systemd-test-token-" + uuid.uuid4().hex
STANDIN = CHECKOUT / "tests" / "ops" / "standin.py"
SITE_PACKAGES = next((CHECKOUT / ".venv" / "lib").glob("python3*/site-packages"), None)


def built(executable: str) -> bool:
    return module_built(ENTRY_POINTS[executable].split(":")[0])


class Suite:
    """The manager plus the units installed into it, and helpers to look at them."""

    def __init__(self, manager: UserManager, workdir: Path, port: int) -> None:
        self.m = manager
        self.workdir = workdir
        self.port = port
        self.logs = workdir / "logs"
        self.root = manager.config_home / "machina"  # %S of a user manager (systemd 252): $XDG_CONFIG_HOME
        self.python = str(workdir / "venv" / "bin" / "python3")

    def log(self, unit: str) -> str:
        path = self.logs / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else "(no output)"

    def state(self, unit: str) -> str:
        return self.m.show(unit, "ActiveState") + "/" + self.m.show(unit, "SubState")

    def wait_active(self, unit: str, timeout: float = 90) -> None:
        try:
            self.m.wait_for(unit, "ActiveState", "active", timeout=timeout)
        except ManagerError as exc:
            raise AssertionError(f"{exc}\n--- output of {unit}:\n{self.log(unit)}") from None

    def main_pid(self, unit: str) -> int:
        return int(self.m.show(unit, "MainPID"))


@pytest.fixture(scope="module")
def suite(request: pytest.FixtureRequest) -> Iterator[Suite]:
    if not request.config.getoption("--run-systemd", default=False):
        pytest.skip("opt-in: run with `make test-systemd` (a real systemd --user manager)")
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no user manager here: {reason}")
    if not os.access(SYSTEM_PYTHON, os.X_OK) or SITE_PACKAGES is None:
        pytest.skip(f"needs {SYSTEM_PYTHON} and the checkout's .venv")
    # Not under /tmp: the units have PrivateTmp=yes, which would hide it from them.
    workdir = CHECKOUT / ".systemd-test" / uuid.uuid4().hex[:12]
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    manager = UserManager(workdir, system_users=("machina",))
    try:
        manager.start()
        s = Suite(manager, workdir, free_port())
        install(s)
        yield s
    finally:
        manager.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def make_venv(s: Suite) -> None:
    """A venv the machina user can run: /usr/bin/python3 with the checkout venv's packages (hard links)."""
    venv = s.workdir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    assert SITE_PACKAGES is not None
    (target,) = (venv / "lib").glob("python3*/site-packages")
    target.rmdir()
    subprocess.run(["cp", "-al", str(SITE_PACKAGES), str(target)], check=True, timeout=300)
    (target / "machina-checkout.pth").write_text(f"{CHECKOUT}\n")


def install(s: Suite) -> None:
    make_venv(s)
    bindir = s.workdir / "bin"
    bindir.mkdir()
    for name in ENTRY_POINTS:
        shim = bindir / name
        shim.write_text(f'#!/bin/sh\nexec {s.python} -m machina.entrypoints {name} "$@"\n')
        shim.chmod(0o755)
    # The maintenance scripts as `make install` puts them in libexec: run by the interpreter of the package.
    libexec = s.workdir / "libexec"
    libexec.mkdir()
    for script in (CHECKOUT / "scripts").iterdir():
        text = script.read_text()
        if text.startswith("#!/usr/bin/env python3\n"):
            text = f"#!{s.python}\n" + text.split("\n", 1)[1]
        (libexec / script.name).write_text(text)
        (libexec / script.name).chmod(0o755)
    s.logs.mkdir()
    unit_dir = s.m.unit_dir
    for unit in UNIT_DIR.iterdir():
        (unit_dir / unit.name).write_text(render(unit.read_text(), bindir=bindir, libexecdir=libexec))
    for unit in UNIT_DIR.glob("*.service"):
        dropin(
            s,
            unit.name,
            "test",
            f"[Service]\nEnvironment=MACHINA_API_TOKEN={TOKEN}\n"
            f"StandardOutput=append:{s.logs}/%n.log\nStandardError=append:{s.logs}/%n.log\n",
        )
    dropin(s, "machina-enqueued.socket", "test", f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{s.port}\n")
    s.m.systemctl("daemon-reload")


def dropin(s: Suite, unit: str, name: str, text: str) -> None:
    d = s.m.unit_dir / f"{unit}.d"
    d.mkdir(exist_ok=True)
    (d / f"{name}.conf").write_text(text)


def probe_unit(s: Suite, daemon: str, name: str, exec_start: str, service_type: str = "notify") -> str:
    """A copy of a shipped daemon unit (all its hardening) that runs ``exec_start`` instead."""
    lines = []
    for line in (UNIT_DIR / daemon).read_text().splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=", "Requires=", "After=", "PartOf=")):
            continue
        if line.startswith("Type="):
            line = f"Type={service_type}"
        if line == "[Install]":
            lines += [f"ExecStart={exec_start}", f"StandardOutput=append:{s.logs}/{name}.log"]
            lines += [f"StandardError=append:{s.logs}/{name}.log"]
        lines.append(line)
    (s.m.unit_dir / name).write_text(render("\n".join(lines) + "\n"))
    s.m.systemctl("daemon-reload")
    return name


# --- the hardening itself, with a stand-in (whatever has landed) -----------------------------------------


@pytest.mark.parametrize("daemon", DAEMONS)
def test_hardened_unit_runs_a_notify_service_to_ready(suite: Suite, daemon: str) -> None:
    name = "probe-" + daemon.replace("@", "")
    # The suite's C extensions load under the unit's MemoryDenyWriteExecute= and system call filter.
    imports = "numpy,uvloop,httptools,prctl,pyseccomp,jsonschema,requests,prometheus_client,sdnotify"
    probe_unit(suite, daemon, name, f"{suite.python} {STANDIN} --name {name} --import {imports}")
    suite.m.systemctl("start", name)  # Type=notify: returns once READY=1 arrived
    suite.wait_active(name, timeout=30)
    assert suite.m.show(name, "SubState") == "running"
    assert int(suite.m.show(name, "MainPID")) > 0
    suite.m.systemctl("stop", name)
    assert suite.m.show(name, "ActiveState") == "inactive"


def test_watchdog_restarts_a_hung_stand_in(suite: Suite) -> None:
    name = probe_unit(suite, "machina-worker@.service", "probe-watchdog.service", f"{suite.python} {STANDIN} --name w")
    dropin(suite, name, "watchdog", "[Service]\nWatchdogSec=2\nRestartSec=0\n")
    suite.m.systemctl("daemon-reload")
    suite.m.systemctl("start", name)
    hung_restarts_watch(suite, name)
    suite.m.systemctl("stop", name)


def hung_restarts_watch(suite: Suite, unit: str) -> None:
    pid = suite.main_pid(unit)
    restarts = int(suite.m.show(unit, "NRestarts"))
    time.sleep(3)  # healthy: pings keep it alive beyond WatchdogSec
    assert suite.main_pid(unit) == pid
    os.kill(pid, signal.SIGSTOP)  # hung: no more WATCHDOG=1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = suite.main_pid(unit)
        if new not in (0, pid) and suite.m.show(unit, "ActiveState") == "active":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"{unit} not restarted after SIGSTOP: {suite.state(unit)}\n{suite.log(unit)}")
    assert int(suite.m.show(unit, "NRestarts")) == restarts + 1
    assert suite.m.show(unit, "Result") in ("success", "watchdog")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the hung process was left behind"


def test_bubblewrap_runs_inside_the_toolhost_sandbox(suite: Suite) -> None:
    """RestrictNamespaces=, SystemCallFilter= and ProtectProc= of the tool host leave bwrap what it needs."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    script = suite.workdir / "bwrap_probe.sh"
    script.write_text(
        "#!/bin/sh\n"
        # The namespaces and mounts machina.sandbox asks bubblewrap for (an unprivileged tool host).
        "exec bwrap --unshare-user --disable-userns --unshare-ipc --unshare-pid --unshare-uts"
        " --unshare-cgroup-try --unshare-net --hostname sandbox --die-with-parent --new-session"
        " --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64"
        " --proc /proc --dev /dev --size 1048576 --perms 1777 --tmpfs /tmp --clearenv --"
        " /bin/sh -c 'echo uid=$(id -u) host=$(cat /proc/sys/kernel/hostname) pids=$(ls /proc | grep -c \"^[0-9]\")'\n"
    )
    script.chmod(0o755)
    name = probe_unit(suite, "machina-toolhost.service", "probe-bwrap.service", str(script), service_type="oneshot")
    result = suite.m.systemctl("start", name, check=False)
    output = suite.log(name)
    assert result.returncode == 0, output
    assert f"uid={suite.m.uids['machina']}" in output and "host=sandbox" in output, output
    pids = int(output.split("pids=")[1].split()[0])
    assert pids < 10, output  # a pid namespace of its own: bwrap's init, the shell and its pipeline


def test_a_seccomp_filter_loads_inside_the_toolhost_sandbox(suite: Suite) -> None:
    """The tool host installs a per-tool seccomp filter: its own filter and NoNewPrivileges= allow that."""
    script = suite.workdir / "seccomp_probe.py"
    script.write_text(
        "import errno, os, pyseccomp\n"
        "f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)\n"
        "f.add_rule(pyseccomp.ERRNO(errno.EACCES), 'mkdir')\n"
        "f.load()\n"
        "try:\n"
        "    os.mkdir('/tmp/probe')\n"
        "    print('mkdir allowed')\n"
        "except PermissionError:\n"
        "    print('mkdir denied by the filter')\n"
    )
    name = probe_unit(
        suite, "machina-toolhost.service", "probe-seccomp.service", f"{suite.python} {script}", service_type="oneshot"
    )
    result = suite.m.systemctl("start", name, check=False)
    assert result.returncode == 0, suite.log(name)
    assert "mkdir denied by the filter" in suite.log(name)


# --- the real executables ---------------------------------------------------------------------------------

REAL = [
    ("machina-toolhost.service", "machina-toolhost"),
    ("machina-embed.service", "machina-embed"),
    ("machina-enqueued.service", "machina-enqueued"),
    ("machina-worker@1.service", "machina-worker"),
]


@pytest.mark.parametrize(("unit", "executable"), REAL)
def test_each_unit_reaches_ready(suite: Suite, unit: str, executable: str) -> None:
    if not built(executable):
        pytest.skip(f"{executable} not built yet")
    suite.m.systemctl("start", unit, check=False, timeout=120)
    suite.wait_active(unit, timeout=120)
    assert suite.m.show(unit, "SubState") == "running"
    assert (suite.root / "queue" / "inbox").is_dir()  # ExecStartPre=machina init made the layout


@pytest.mark.parametrize("profile", ["dev", "prod"])
def test_a_tool_runs_through_the_toolhost_unit(suite: Suite, profile: str) -> None:
    """A real tool call into the unit's bubblewrap sandbox (prod: with the seccomp filter too)."""
    if not built("machina-toolhost") or not module_built("machina.cli.tool_cmd"):
        pytest.skip("machina-toolhost not built yet")
    unit = "machina-toolhost.service"
    dropin(suite, unit, "profile", f"[Service]\nEnvironment=MACHINA_PROFILE={profile}\n")
    suite.m.systemctl("daemon-reload")
    suite.m.systemctl("restart", "machina-toolhost.socket", unit, timeout=120)
    suite.wait_active(unit)
    data = suite.root / "data"
    uid = suite.m.uids["machina"]
    data.mkdir(exist_ok=True)
    (data / "app.log").write_text(SAMPLE_LOG)
    for path in (data, data / "app.log"):
        os.chown(path, uid, uid)
    env = [f"MACHINA_ROOT={suite.root}", f"MACHINA_RUNTIME_DIR={suite.m.runtime_dir / 'machina'}"]
    inputs = json.dumps({"input_path": "data/app.log", "pattern": "ERROR"})
    result = suite.m.run(
        "runuser", "-u", "machina", "--", "env", "MACHINA_ENV_FILE=/dev/null", *env, suite.python,
        "-m", "machina.entrypoints", "machina", "tool", "run", "AID.ERROR_SCAN.v1", "--input", inputs,
        check=False,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stdout + result.stderr + suite.log(unit)
        reply = json.loads(result.stdout)
        assert reply["ok"] and reply["output"]["matches"] == 1, reply
    finally:
        (suite.m.unit_dir / f"{unit}.d" / "profile.conf").unlink()
        suite.m.systemctl("daemon-reload")


def test_watchdog_restarts_a_hung_real_service(suite: Suite) -> None:
    unit = next((u for u, e in REAL if built(e)), None)
    if unit is None:
        pytest.skip("no machina executable built yet")
    dropin(suite, unit.replace("@1", "@"), "watchdog", "[Service]\nWatchdogSec=3\nRestartSec=0\n")
    suite.m.systemctl("daemon-reload")
    suite.m.systemctl("restart", unit, timeout=120)
    suite.wait_active(unit)
    try:
        hung_restarts_watch(suite, unit)
    finally:
        (suite.m.unit_dir / f"{unit.replace('@1', '@')}.d" / "watchdog.conf").unlink()
        suite.m.systemctl("daemon-reload")


def test_a_job_flows_from_curl_to_done(suite: Suite) -> None:
    missing = [e for e in ("machina-enqueued", "machina-worker", "machina-toolhost") if not built(e)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not built yet")
    suite.m.systemctl("start", "machina.target", timeout=180)
    for unit, executable in REAL:
        if built(executable):
            suite.wait_active(unit, timeout=120)
    data = suite.root / "data"
    suite.m.run("runuser", "-u", "machina", "--", "mkdir", "-p", str(data))
    (data / "app.log").write_text(SAMPLE_LOG)
    os.chown(data / "app.log", suite.m.uids["machina"], suite.m.uids["machina"])
    job = {**SAMPLE_JOB, "request_id": "systemd-test-" + uuid.uuid4().hex[:8]}
    queued = curl_enqueue(f"http://127.0.0.1:{suite.port}", TOKEN, job)
    done = suite.root / "queue" / "done" / queued
    assert wait_for_path(done), f"{queued} not in done/: " + "\n".join(suite.log(u) for u, _ in REAL)


def test_status_sees_the_units(suite: Suite) -> None:
    suite.m.systemctl("start", "machina-toolhost.socket", "machina-embed.socket", "machina-enqueued.socket")
    env = {"MACHINA_ENV_FILE": "/dev/null"}
    result = suite.m.run(
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        suite.python,
        "-m",
        "machina.entrypoints",
        "machina",
        "status",
        "--user",
        "--json",
        check=False,
    )
    report = json.loads(result.stdout)
    assert report["manager"] == "systemd", result.stdout + result.stderr
    names = {c["name"] for c in report["components"]}
    assert {"machina-toolhost.service", "machina-embed.service", "machina-enqueued.service"} <= names
    by_name = {c["name"]: c for c in report["components"]}
    # Listen= as systemctl shows it was parsed into probes of the real socket paths and address.
    toolhost_checks = {c["what"]: c for c in by_name["machina-toolhost.service"]["checks"]}
    assert toolhost_checks["socket"]["ok"], toolhost_checks
    assert str(suite.m.runtime_dir / "machina" / "toolhost.sock") in toolhost_checks["socket"]["detail"]
    http = {c["what"]: c for c in by_name["machina-enqueued.service"]["checks"]}["http"]
    assert f"127.0.0.1:{suite.port}/health" in http["detail"]
    assert result.returncode == (0 if report["ok"] else 69)


def experience(i: int) -> dict:
    record = {"user_request": f"request {i}", "tool_used": None, "success": True, "elapsed_sec": 0.0}
    return {**record, "result_preview": "x" * 140}


@pytest.mark.parametrize("unit", ["machina-guardrails.service", "machina-memory-maintenance.service"])
def test_maintenance_units_run_clean(suite: Suite, unit: str) -> None:
    """The timers' oneshot services run their scripts as machina under their own (tighter) sandbox."""
    memory = suite.root / "memory"
    uid = suite.m.uids["machina"]
    for d in (suite.root, memory):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, uid, uid)
    stream = memory / "experiences.jsonl"
    # ~40 MiB of well-formed experiences (the guardrails' reindex --verify checks every line's schema)
    big = "".join(json.dumps({"record": experience(i), "ts": 1.0 + i}) + "\n" for i in range(200_000))
    stream.write_text(big)
    os.chown(stream, uid, uid)
    result = suite.m.systemctl("start", unit, check=False, timeout=300)
    assert result.returncode == 0, f"{suite.state(unit)}\n{suite.log(unit)}"
    assert suite.m.show(unit, "Result") == "success"
    if unit == "machina-memory-maintenance.service":
        lines = (memory / "experiences.jsonl").read_text().splitlines()
        assert len(lines) == 5000 and json.loads(lines[-1])["record"]["user_request"] == "request 199999"
        archived = list((memory / "archive").glob("*/experiences.jsonl"))
        assert len(archived) == 1 and archived[0].stat().st_size == len(big)
    else:
        assert "== run_guardrails: exit 0" in suite.log(unit)


def test_stopping_the_target_leaves_nothing_behind(suite: Suite) -> None:
    suite.m.systemctl("stop", "machina.target", timeout=180)
    for unit, _ in REAL:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and suite.m.show(unit, "ActiveState") not in ("inactive", "failed"):
            time.sleep(0.2)
        assert suite.m.show(unit, "ActiveState") in ("inactive", "failed"), suite.state(unit)
    cgroup = Path("/sys/fs/cgroup/systemd") / suite.m.name / "app.slice"
    # A unit is "inactive" once its main process is reaped; processes it took down with it (sandboxes dying
    # with their parent, SIGKILLed children) may need a moment longer to exit. Ten seconds, then it is a leak.
    deadline = time.monotonic() + 10
    while (leftovers := cgroup_processes(cgroup)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers, f"processes left in {cgroup}: {leftovers}"


def cgroup_processes(cgroup: Path) -> dict[str, str]:
    """pid -> command line of every process still in ``cgroup`` or below it."""
    found: dict[str, str] = {}
    if cgroup.exists():
        for procs in cgroup.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue  # gone while we looked
    return found


def test_the_units_were_the_shipped_ones(suite: Suite) -> None:
    """Guard against testing something else: the installed copies differ only by @BINDIR@."""
    for unit in UNIT_DIR.iterdir():
        installed = (suite.m.unit_dir / unit.name).read_text()
        assert installed == render(unit.read_text(), bindir=suite.workdir / "bin", libexecdir=suite.workdir / "libexec")
    assert sys.executable  # the test process itself runs the checkout's interpreter

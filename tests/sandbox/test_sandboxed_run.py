"""sandboxed_run() with real bubblewrap (and the fallback): what a tool process gets and does not get."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import pytest

from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, sandboxed_run
from machina.testing.processes import processes_with_arg

from .conftest import needs_bwrap, needs_root, system_python

LIMITS = Rlimits(cpu_sec=5, as_mb=1024, fsize_mb=8, nofile=64, nproc=32)


def run(policy: SandboxPolicy, argv: list[str], **kw):
    kw.setdefault("timeout_s", 20)
    kw.setdefault("stdout_max", 1 << 20)
    kw.setdefault("stderr_max", 1 << 20)
    kw.setdefault("rlimits", LIMITS)
    return sandboxed_run(argv, policy=policy, **kw)


def py(policy: SandboxPolicy, code: str, **kw):
    return run(policy, [system_python(), "-I", "-S", "-c", code], **kw)


def test_environment_is_cleared(any_policy: SandboxPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACHINA_API_TOKEN", "tok-visible-only-to-the-host")
    monkeypatch.setenv("SOME_SECRET", "also-secret")
    result = py(any_policy, "import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(result.stdout)
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "PWD", "LC_CTYPE"}, env
    assert "tok-visible-only-to-the-host" not in result.stdout.decode()


@needs_root
def test_runs_as_the_tool_uid_without_capabilities(any_policy: SandboxPolicy) -> None:
    result = py(
        any_policy,
        "import os; s=open('/proc/self/status').read();"
        "print(os.getresuid(), os.getresgid(), os.getgroups());"
        "print([l for l in s.splitlines() if l.startswith(('CapEff','CapPrm','CapBnd','NoNewPrivs','Seccomp:'))])",
    )
    out = result.stdout.decode()
    assert "(65534, 65534, 65534) (65534, 65534, 65534) []" in out
    assert "'CapEff:\\t0000000000000000'" in out and "'CapPrm:\\t0000000000000000'" in out
    assert "'NoNewPrivs:\\t1'" in out and "'Seccomp:\\t2'" in out


@needs_bwrap
def test_namespace_view_of_the_system(bwrap_policy: SandboxPolicy, tmp_path) -> None:
    marker = tmp_path / "host-file"
    marker.write_text("host")
    code = f"""
import os, json
print(json.dumps({{
  "root": sorted(os.listdir("/")),
  "etc": sorted(os.listdir("/etc")),
  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
  "host_file": os.path.exists({str(marker)!r}),
  "hostname": os.uname().nodename,
  "net": sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else None,
}}))
"""
    view = json.loads(py(bwrap_policy, code).stdout)
    assert set(view["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}
    assert "shadow" not in view["etc"] and "machina" not in view["etc"]
    assert max(view["pids"]) < 10, "a pid namespace of its own"
    assert view["host_file"] is False
    assert view["hostname"] == "machina-sandbox"


@needs_bwrap
def test_system_is_read_only_and_tmp_is_private_and_capped(bwrap_policy: SandboxPolicy) -> None:
    code = """
import os
for path in ("/usr/machina-test", "/etc/machina-test"):
    try:
        open(path, "w"); print("WROTE", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
open("/tmp/ok", "w").write("fine"); print("tmp ok")
"""
    out = py(bwrap_policy, code).stdout.decode()
    assert "WROTE" not in out and out.count("refused") == 2 and "tmp ok" in out
    small_tmp = replace(bwrap_policy, tmp_mb=4)
    big = py(small_tmp, "open('/tmp/big','wb').write(b'x' * (8 << 20))", rlimits=Rlimits(fsize_mb=0))
    assert b"No space left on device" in big.stderr and big.exit_code != 0


def test_rlimits_apply(any_policy: SandboxPolicy) -> None:
    names = ("CPU", "AS", "FSIZE", "NOFILE", "NPROC")
    code = f"import resource as r; print([r.getrlimit(getattr(r, 'RLIMIT_' + n)) for n in {names!r}])"
    mib = 1024 * 1024
    expected = [(5, 5), (1024 * mib, 1024 * mib), (8 * mib, 8 * mib), (64, 64), (32, 32)]
    assert py(any_policy, code).stdout.decode().strip() == str(expected)


def test_timeout_kills_everything_the_tool_started(any_policy: SandboxPolicy) -> None:
    tag = f"{os.getpid()}.{time.monotonic_ns() % 1000}"
    code = f"""
import subprocess, time
try:
    subprocess.Popen(['/usr/bin/sleep', '{tag}'], start_new_session=True)  # try to leave the process group
except PermissionError:
    subprocess.Popen(['/usr/bin/sleep', '{tag}'])  # refused (no bubblewrap: setsid is refused)
time.sleep(60)
"""
    started = time.monotonic()
    result = py(any_policy, code, timeout_s=1.5)
    assert result.timed_out
    assert time.monotonic() - started < 10
    assert processes_with_arg(tag) == [], "a process of the tool outlived its timeout"


def test_output_is_capped(any_policy: SandboxPolicy) -> None:
    result = run(any_policy, ["/usr/bin/head", "-c", "100000", "/dev/zero"], stdout_max=1000)
    assert len(result.stdout) == 1000 and result.stdout_truncated


@needs_bwrap
def test_no_network_without_the_net_profile(bwrap_policy: SandboxPolicy) -> None:
    code = "import socket; s = socket.socket(); s.settimeout(2); s.connect(('1.1.1.1', 80)); print('CONNECTED')"
    without_seccomp = replace(bwrap_policy, seccomp=False)
    result = py(without_seccomp, code)
    assert b"CONNECTED" not in result.stdout
    assert b"Network is unreachable" in result.stderr  # an empty network namespace, even without seccomp


@needs_bwrap
def test_a_read_only_path_under_the_hosts_tmp_is_bound_over_the_private_tmp(
    bwrap_policy: SandboxPolicy, tmp_path
) -> None:
    # A checkout under /tmp (a CI clone) must still reach its interpreter and package inside the sandbox.
    shared, hidden = tmp_path / "shared", tmp_path / "hidden"
    shared.mkdir()
    hidden.mkdir()
    (shared / "code.txt").write_text("visible")
    (hidden / "secret.txt").write_text("host only")
    code = f"""
import os
print(open({str(shared / "code.txt")!r}).read())
print(os.path.exists({str(hidden / "secret.txt")!r}))
try:
    open({str(shared / "new.txt")!r}, "w"); print("WROTE")
except OSError as exc:
    print("refused", exc.strerror)
"""
    out = py(bwrap_policy, code, ro_paths=[str(shared)]).stdout.decode().split("\n")
    assert out[:2] == ["visible", "False"] and out[2].startswith("refused")


def test_d4_nproc_applies_only_where_it_counts_the_sandboxs_own_tasks(any_policy) -> None:
    """In bubblewrap's user namespace, or as the tool uid, RLIMIT_NPROC bounds the sandbox; in the fallback
    of a non-root daemon it would count the daemon's own threads, so it is left out there (TasksMax= holds)."""
    from dataclasses import replace

    from machina.sandbox.launch import nproc_where_it_counts

    limits = Rlimits(cpu_sec=2, nproc=32)
    assert nproc_where_it_counts(any_policy, limits) == limits
    unprivileged = replace(any_policy, tool_uid=None, tool_gid=None)
    expected = limits if unprivileged.bwrap else Rlimits(cpu_sec=2)
    assert nproc_where_it_counts(unprivileged, limits) == expected


def test_d17_the_fallback_runs_nothing_between_fork_and_exec(fallback_policy: SandboxPolicy) -> None:
    """No preexec_fn (unsafe in the threaded toolhost): a launcher program sets the process up, then execs."""
    from machina.sandbox.launch import prepare

    launch = prepare(fallback_policy, ["/bin/true"], rlimits=Rlimits(cpu_sec=3))
    try:
        assert launch.preexec is None
        assert launch.argv[-2:] == ["--", "/bin/true"] and "machina.sandbox.fallback" in launch.argv
        assert "--rlimit=cpu_sec=3" in launch.argv
    finally:
        launch.finished()
    result = sandboxed_run(
        ["/bin/sh", "-c", "ulimit -t; setsid true || echo refused"],
        policy=fallback_policy,
        timeout_s=30,
        stdout_max=4096,
        stderr_max=4096,
        rlimits=Rlimits(cpu_sec=3),
    )
    assert result.stdout.decode().split() == ["3", "refused"], result.stderr


def test_a_directory_below_etc_is_bound_over_the_etc_view(bwrap_policy: SandboxPolicy) -> None:
    """The policy scripts live in /etc/machina/policies: a path below /etc is shown although /etc is a view."""
    shown = "/etc/default"  # any directory below /etc that the short list of the view does not hold
    if not os.path.isdir(shown):
        pytest.skip(f"{shown} does not exist here")
    expected = sorted(os.listdir(shown))
    result = sandboxed_run(
        ["/bin/ls", "-A", shown, "/etc"],
        policy=bwrap_policy,
        timeout_s=30,
        stdout_max=65536,
        stderr_max=4096,
        ro_paths=[shown],
    )
    assert result.exit_code == 0, result.stderr
    listing = result.stdout.decode()
    assert all(name in listing for name in expected)
    assert "shadow" not in listing.split()  # /etc is still the view, with a mount point added
    hidden = sandboxed_run(
        ["/bin/ls", "-A", shown], policy=bwrap_policy, timeout_s=30, stdout_max=4096, stderr_max=4096
    )
    assert hidden.stdout == b"", "without asking, at most its empty mount point is there"

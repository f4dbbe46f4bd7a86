"""The seccomp profiles in real child processes: what strict and net refuse, what still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, sandboxed_run, seccomp

from .conftest import system_python

PRELUDE = """
import ctypes, errno, fcntl, json, os, socket, termios, threading
libc = ctypes.CDLL(None, use_errno=True)
def outcome(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def call(name, *args):
    fn = getattr(libc, name)
    if fn(*args) == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def thread():
    t = threading.Thread(target=lambda: None); t.start(); t.join()
def tiocsti():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSTI, b"x")
"""

CHECKS = {
    "inet": "socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()",
    "inet6": "socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()",
    "unix": "socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()",
    "packet": "socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()",
    "netlink_route": "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()",
    "netlink_audit": "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9).close()",
    "socketpair": "[s.close() for s in socket.socketpair()]",
    "unshare_user": "call('unshare', 0x10000000)",
    "unshare_net": "call('unshare', 0x40000000)",
    "mount": "call('mount', b'none', b'/tmp', b'tmpfs', 0, None)",
    "ptrace_traceme": "call('ptrace', 0, 0, 0, 0)",
    "chroot": "call('chroot', b'/tmp')",
    "clone3": "call('syscall', 435, None, 0)",
    "bpf": "call('syscall', 321, 0, None, 0)",
    "personality_exec": "call('personality', 0x0400000)",
    "tiocsti": "tiocsti()",
    "thread": "thread()",
    "fork": "(lambda p: p == 0 and os._exit(0) or os.waitpid(p, 0))(os.fork())",
}

STRICT = {
    "inet": "EPERM",
    "inet6": "EPERM",
    "unix": "EPERM",
    "packet": "EPERM",
    "netlink_route": "EPERM",
    "netlink_audit": "EPERM",
    "socketpair": "ok",
    "unshare_user": "EPERM",
    "unshare_net": "EPERM",
    "mount": "EPERM",
    "ptrace_traceme": "EPERM",
    "chroot": "EPERM",
    "clone3": "ENOSYS",
    "bpf": "EPERM",
    "personality_exec": "EPERM",
    "tiocsti": "EPERM",
    "thread": "ok",
    "fork": "ok",
}
NET = {**STRICT, "inet": "ok", "inet6": "ok", "netlink_route": "ok"}


def outcomes(policy: SandboxPolicy, profile: str) -> dict[str, str]:
    code = PRELUDE + "print(json.dumps({" + ",".join(f"{k!r}: outcome(lambda: {v})" for k, v in CHECKS.items()) + "}))"
    result = sandboxed_run(
        [system_python(), "-I", "-S", "-c", code],
        policy=policy,
        profile=profile,
        timeout_s=20,
        stdout_max=1 << 16,
        stderr_max=1 << 16,
        rlimits=Rlimits(nproc=64),
    )
    assert result.exit_code == 0, result.stderr.decode()
    import json

    return json.loads(result.stdout)


@pytest.mark.parametrize("profile, expected", [("strict", STRICT), ("net", NET)])
def test_profile_outcomes(any_policy: SandboxPolicy, profile: str, expected: dict[str, str]) -> None:
    assert outcomes(any_policy, profile) == expected


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown seccomp profile 'loose'"):
        seccomp.filters("loose")


def test_bpf_programs_are_exported_for_bubblewrap() -> None:
    for profile in seccomp.PROFILES:
        programs = seccomp.bpf_programs(profile)
        assert len(programs) == 2
        assert all(len(p) % 8 == 0 and len(p) >= 8 for p in programs)  # struct sock_filter is 8 bytes


def _guarded(filter_name: str, code: str) -> subprocess.CompletedProcess[str]:
    script = f"from machina.sandbox.seccomp import {filter_name}; {filter_name}().load()\n" + PRELUDE + code
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)


def test_no_spawn_layer_allows_threads_but_no_process_or_program() -> None:
    code = (
        "print(json.dumps({'thread': outcome(thread), 'fork': outcome(os.fork),"
        " 'exec': outcome(lambda: os.execv('/usr/bin/true', ['true'])),"
        " 'posix_spawn': outcome(lambda: os.posix_spawn('/usr/bin/true', ['true'], {}))}))"
    )
    result = _guarded("no_spawn_filter", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"thread": "ok", "fork": "EPERM", "exec": "EPERM", "posix_spawn": "EPERM"}'


def test_session_guard_keeps_processes_in_their_group() -> None:
    result = _guarded("session_guard_filter", "print(outcome(os.setsid), outcome(lambda: os.setpgid(0, 0)))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["EPERM", "EPERM"]

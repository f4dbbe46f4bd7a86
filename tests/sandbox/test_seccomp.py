"""The seccomp profiles in real child processes: what strict and net refuse, what still works."""

from __future__ import annotations

import struct
import subprocess
import sys

import pyseccomp as sc
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


# --- the allowlist as libseccomp's binary tree answers every syscall as the chain did ----------------------

_AUDIT_ARCH_X86_64, _AUDIT_ARCH_I386 = 0xC000003E, 0x40000003
_X32_BIT = 0x40000000


def run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...]) -> int:
    """Classic BPF over a struct seccomp_data, as the kernel runs a filter: the value it returns."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * 6)[:6])
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    acc = index = 0
    memory = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:  # ret k
            return k
        elif code == 0x16:  # ret a
            return acc
        elif code == 0x05:  # ja k
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq / jgt / jge / jset k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x54:  # and k
            acc &= k
        elif code == 0x00:  # ld k
            acc = k
        elif code == 0x02:  # st M[k]
            memory[k] = acc
        elif code == 0x60:  # ld M[k]
            acc = memory[k]
        elif code == 0x07:  # tax
            index = acc
        elif code == 0x87:  # txa
            acc = index
        else:
            raise AssertionError(f"BPF opcode {code:#x} at {pc - 1} is not interpreted here: add it")


def _argument_cases() -> list[tuple[int, ...]]:
    """Arguments that reach every argument rule: clone's flags, socket families and protocols, ioctl
    requests with high bits set, personality values; each also with a high word in the compared argument."""
    values = [0, 1, 2, 10, 16, 17, 0x10000000, 0x40000000, 0x00010000, 0x5412, 0x541C, 0x8, 0x20008, 0xFFFFFFFF]
    cases = [(0,) * 6]
    for position in range(3):
        for value in values + [v | (1 << 32) for v in values]:
            args = [0] * 6
            args[position] = value
            cases.append(tuple(args))
    cases.append((16, 3, 0, 0, 0, 0))  # netlink, protocol 0 (route) in argument 2
    cases.append((16, 3, 9, 0, 0, 0))  # netlink audit
    return cases


@pytest.mark.parametrize("profile", seccomp.PROFILES)
def test_the_allowlist_tree_answers_every_syscall_as_the_chain(profile: str) -> None:
    tree = seccomp.bpf_programs(profile)[0]
    chain_filter = seccomp.filters(profile)[0]
    chain_filter.set_attr(sc.Attr.CTL_OPTIMIZE, 1)  # libseccomp's default: one comparison after another
    chain = seccomp._export(chain_filter)
    assert tree != chain, "the exported allowlist is not libseccomp's tree: the test compares a program to itself"
    arches = [(_AUDIT_ARCH_X86_64, 0), (_AUDIT_ARCH_X86_64, _X32_BIT), (_AUDIT_ARCH_I386, 0)]
    cases = _argument_cases()
    differ = [
        (hex(arch), nr | bit, args)
        for arch, bit in arches
        for nr in range(512)
        for args in (cases if nr in _WITH_ARGUMENT_RULES else cases[:1])
        if run_bpf(tree, nr | bit, arch, args) != run_bpf(chain, nr | bit, arch, args)
    ]
    assert differ == []


#: x86_64 numbers of the syscalls with argument rules: ioctl, socket, socketpair, clone, personality.
_WITH_ARGUMENT_RULES = {16, 41, 53, 56, 135}

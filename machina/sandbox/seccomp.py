"""seccomp-BPF filters for tool processes, built with pyseccomp (libseccomp) and exported as BPF for bwrap.

A profile is two stacked filters (the kernel applies every filter and the strictest answer wins):

* the **allowlist**: every syscall not named is refused with EPERM.  It follows Docker's default profile
  minus what a tool never needs and an attacker wants: ptrace and process_vm_*, mount and the new mount
  API, unshare/setns and namespace flags to clone (clone3 answers ENOSYS so libc falls back to clone, whose
  flags we can inspect), bpf, perf_event_open, userfaultfd, io_uring, keyrings, kexec, modules, reboot,
  swap, clock and host-name setting, quotactl, open_by_handle_at, chroot/pivot_root.  ``strict`` also
  refuses ``socket``, ``connect``, ``bind``, ``listen`` and ``accept``; ``net`` allows inet and inet6
  sockets and routing netlink, never unix sockets (the host's abstract ones would be in reach).
  ``socketpair(AF_UNIX)`` is allowed in both: it reaches nothing.
* the **ioctl guard**: a default-allow filter refusing TIOCSTI and TIOCLINUX (typing into a terminal),
  compared on the low 32 bits the kernel uses.  libseccomp cannot combine an unconditional allow with a
  conditional refusal for one syscall, hence the second filter.

Only the native architecture is allowed; a syscall made through another ABI (int 0x80 on x86_64, x32)
kills the process (libseccomp's bad-arch default).

:func:`no_spawn_filter` is a third layer a Python executor loads on itself after start-up, so that code
without the SHELL capability can start neither programs nor processes (threads stay allowed): no exec,
no fork bomb, nothing left behind in a pre-started executor.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator

import pyseccomp as sc

PROFILES = ("strict", "net")

# Namespace flags refused in clone(); CLONE_NEWTIME too (a time namespace is harmless but never needed).
_CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x00000080  # CLONE_NEWTIME
)
_TIOCSTI = 0x5412
_TIOCLINUX = 0x541C
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_NETLINK_ROUTE = 0
# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, and the query 0xffffffff.
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_ALLOWED = """
access alarm arch_prctl brk capget capset chdir chmod chown clock_getres clock_gettime clock_nanosleep
close close_range copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_pwait
epoll_pwait2 epoll_wait eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fallocate fchdir fchmod fchmodat fchown fchownat fcntl fdatasync fgetxattr flistxattr flock fork
fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv futimesat get_mempolicy
get_robust_list getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername
getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit getrusage getsid
getsockname getsockopt gettid gettimeofday getuid getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_setup io_submit ioctl ioprio_get
ioprio_set kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr link
linkat listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create mincore
mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
nanosleep newfstatat open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
pkey_free pkey_mprotect poll ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg
remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
sched_getparam sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg
sendto set_robust_list set_tid_address setfsgid setfsuid setgid setgroups setitimer setpgid setpriority
setregid setresgid setresuid setreuid setrlimit setsid setsockopt setuid setxattr shmat shmctl shmdt
shmget shutdown sigaltstack signalfd signalfd4 splice stat statfs statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
timer_settime timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink
unlinkat utime utimensat utimes vfork vmsplice wait4 waitid write writev
""".split()  # noqa: SIM905 - one syscall list, grouped for reading

_NET_ONLY = "accept accept4 bind connect listen".split()  # noqa: SIM905


class SeccompUnavailable(RuntimeError):
    """libseccomp could not build a filter on this machine (unsupported architecture, old library)."""


def _allowlist(profile: str) -> sc.SyscallFilter:
    filt = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
    _as_tree(filt)
    names = _ALLOWED + (_NET_ONLY if profile == "net" else [])
    for name in names:
        _add(filt, sc.ALLOW, name)
    _add(filt, sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_NAMESPACE_FLAGS, 0))
    _add(filt, sc.ERRNO(errno.ENOSYS), "clone3")
    _add(filt, sc.ALLOW, "socketpair", sc.Arg(0, sc.EQ, _AF_UNIX))
    if profile == "net":
        for family in (_AF_INET, _AF_INET6):
            _add(filt, sc.ALLOW, "socket", sc.Arg(0, sc.EQ, family))
        # Routing netlink only (getaddrinfo's AI_ADDRCONFIG); no unix sockets: a process sharing the host's
        # network namespace would otherwise reach every abstract unix socket on the host.
        _add(filt, sc.ALLOW, "socket", sc.Arg(0, sc.EQ, _AF_NETLINK), sc.Arg(2, sc.EQ, _NETLINK_ROUTE))
    for value in _PERSONALITIES:
        _add(filt, sc.ALLOW, "personality", sc.Arg(0, sc.EQ, value))
    return filt


#: libseccomp's binary tree of syscall numbers (SCMP_FLTATR_CTL_OPTIMIZE=2, libseccomp 2.5+) instead of one
#: comparison after another.  The kernel runs a new filter once per syscall number when it is loaded, to
#: cache the ones it allows whatever their arguments: through the 306-instruction chain that took 0.77 ms
#: in every sandbox's start, through the tree 0.41 (bench/sandbox_parts.py has the whole launch).
_TREE = 2


def _as_tree(filt: sc.SyscallFilter) -> None:
    with contextlib.suppress(OSError):  # an older libseccomp: the same filter as a chain
        filt.set_attr(sc.Attr.CTL_OPTIMIZE, _TREE)


def _ioctl_guard() -> sc.SyscallFilter:
    filt = sc.SyscallFilter(sc.ALLOW)
    for request in (_TIOCSTI, _TIOCLINUX):
        _add(filt, sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    return filt


_CLONE_THREAD = 0x00010000


def no_spawn_filter() -> sc.SyscallFilter:
    """A default-allow layer refusing execve/execveat, fork/vfork and any clone that is not a thread."""
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in ("execve", "execveat", "fork", "vfork"):
        _add(filt, sc.ERRNO(errno.EPERM), name)
    _add(filt, sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    _add(filt, sc.ERRNO(errno.ENOSYS), "clone3")  # libc falls back to clone, which the rule above inspects
    return filt


def _add(filt: sc.SyscallFilter, action: int, name: str, *args: sc.Arg) -> None:
    if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:
        return  # not a syscall on this architecture (e.g. open on aarch64)
    filt.add_rule(action, name, *args)


def session_guard_filter() -> sc.SyscallFilter:
    """Without bubblewrap there is no pid namespace to tear down: refusing setsid/setpgid keeps every
    process a tool starts in its process group, so the timeout's group kill reaches all of them."""
    filt = sc.SyscallFilter(sc.ALLOW)
    for name in ("setsid", "setpgid"):
        _add(filt, sc.ERRNO(errno.EPERM), name)
    return filt


def filters(profile: str) -> list[sc.SyscallFilter]:
    """The stacked filters of ``profile`` (``strict`` or ``net``), in load order."""
    if profile not in PROFILES:
        raise ValueError(f"unknown seccomp profile {profile!r}: expected one of {', '.join(PROFILES)}")
    try:
        return [_allowlist(profile), _ioctl_guard()]
    except OSError as exc:
        raise SeccompUnavailable(f"cannot build the {profile} seccomp filter: {exc}") from exc


_bpf_cache: dict[str, tuple[bytes, ...]] = {}
_bpf_lock = threading.Lock()


def bpf_programs(profile: str) -> tuple[bytes, ...]:
    """The profile's filters as raw BPF programs (what ``bwrap --add-seccomp-fd`` reads), built once."""
    with _bpf_lock:
        cached = _bpf_cache.get(profile)
        if cached is None:
            cached = tuple(_export(f) for f in filters(profile))
            _bpf_cache[profile] = cached
        return cached


def _export(filt: sc.SyscallFilter) -> bytes:
    fd = os.memfd_create("machina-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def no_spawn_program() -> bytes:
    """:func:`no_spawn_filter` as a BPF program (built once), for an executor to load with machina.sandbox.bpf."""
    with _bpf_lock:
        cached = _bpf_cache.get("no_spawn")
        if cached is None:
            cached = (_export(no_spawn_filter()),)
            _bpf_cache["no_spawn"] = cached
        return cached[0]


def session_guard_program() -> bytes:
    """:func:`session_guard_filter` as a BPF program (built once), for the no-bubblewrap launcher."""
    with _bpf_lock:
        cached = _bpf_cache.get("session_guard")
        if cached is None:
            cached = (_export(session_guard_filter()),)
            _bpf_cache["session_guard"] = cached
        return cached[0]


def memfd_of(program: bytes) -> int:
    """A readable memfd holding ``program``, positioned at the start; the caller closes it."""
    fd = os.memfd_create("machina-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def program_fds(profile: str) -> Iterator[int]:
    """One readable memfd per BPF program of ``profile``, positioned at the start; the caller closes them."""
    for program in bpf_programs(profile):
        yield memfd_of(program)


def load(profile: str) -> None:
    """Load the profile's filters on the calling process (no bwrap: the fallback path, between fork and exec).

    Sets no_new_privs first, as the kernel requires of an unprivileged process.
    """
    for filt in filters(profile):
        filt.load()

"""Turn a command into what starts it sandboxed: the bubblewrap argv, the fds to pass, the child setup.

:func:`prepare` is shared by :func:`machina.sandbox.sandboxed_run` (one external program) and the
toolhost's Python executors, so both paths get the same namespaces, mounts, environment, rlimits,
no_new_privs, seccomp filters and uid.  See the package docstring for the whole model.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from machina.owned import close_scratch as owned_close_scratch
from machina.owned import scratch_dir
from machina.proc import Rlimits
from machina.sandbox import fallback, seccomp
from machina.sandbox.etcview import default_view
from machina.sandbox.policy import SandboxPolicy, SandboxUnavailable

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_TMP = "/tmp"  # noqa: S108 - the sandbox's own private tmpfs, not the host's /tmp
# util-linux helpers run first inside the sandbox: set the limits, then become the tool uid.
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"
_MIB = 1024 * 1024
SANDBOX_HOSTNAME = "machina-sandbox"
SCRATCH_PREFIX = "machina-tool"

MERGED_USR_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
GPU_DEVICES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
    *(f"/dev/nvidia{i}" for i in range(16)),
    "/dev/dri",
)
# Kept by bubblewrap (running as root) only so the tool can drop to the tool uid; gone after the drop.
_DROP_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


def base_environment(extra: Mapping[str, str] | None = None, home: str = SANDBOX_TMP) -> dict[str, str]:
    """The whole environment of a tool process: nothing is inherited from the toolhost."""
    env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
    env.update(extra or {})
    return env


@dataclass
class Launch:
    """Everything :func:`subprocess.Popen` needs to start one sandboxed process.

    ``preexec`` is None with bubblewrap: nothing runs between fork and exec, so Python can vfork (a fork of
    the toolhost costs milliseconds); limits are set by ``prlimit`` inside the sandbox instead.
    """

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None] | None
    cwd: str | None = None  # host directory (fallback only; bubblewrap uses --chdir)
    _owned_fds: list[int] = field(default_factory=list)
    _scratch: str | None = None

    def spawned(self) -> None:
        """Release what only the child needed (seccomp memfds); call right after the child started."""
        for fd in self._owned_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned_fds.clear()

    def finished(self) -> None:
        """Release everything, the fallback's scratch directory included; call once the child is gone."""
        self.spawned()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def prepare(
    policy: SandboxPolicy,
    command: Sequence[str],
    *,
    profile: str | None = None,
    network: bool = False,
    ro_paths: Iterable[str] = (),
    devices: Iterable[str] = (),
    cwd: str = SANDBOX_TMP,
    env: Mapping[str, str] | None = None,
    drop_in_process: bool = False,
    keep_fds: Sequence[int] = (),
    rlimits: Rlimits | None = None,
) -> Launch:
    """Build the launch of ``command`` under ``policy``.

    ``profile`` is the seccomp profile (default: the policy's); ``network`` keeps the host's network
    namespace (only for tools that need it); ``ro_paths`` are host paths made visible read-only at the same
    place; ``devices`` are device paths bound when present (the GPU); ``drop_in_process`` means the command
    drops to the tool uid itself (a Python executor) instead of through ``setpriv``; ``keep_fds`` are
    passed through to the command; ``rlimits`` bound the command (bubblewrap itself is not limited).
    """
    profile = profile or ("net" if network else policy.default_profile)
    rlimits = nproc_where_it_counts(policy, rlimits)
    seccomp_fds = list(seccomp.program_fds(profile)) if policy.seccomp and policy.bwrap else []
    if policy.bwrap is None:
        return _prepare_fallback(policy, command, profile, cwd, env, drop_in_process, keep_fds, rlimits)
    argv = [policy.bwrap, *_namespace_args(policy, network)]
    argv += _mount_args(ro_paths, devices, policy.tmp_mb)
    argv += ["--chdir", cwd, "--clearenv"]
    for key, value in base_environment(env).items():
        argv += ["--setenv", key, value]
    for fd in seccomp_fds:
        argv += ["--add-seccomp-fd", str(fd)]
    argv.append("--")
    argv += _prlimit(rlimits)
    if policy.drops_privileges and not drop_in_process:
        argv += _setpriv(policy)
    argv += list(command)
    return Launch(
        argv=argv,
        env={"PATH": SANDBOX_PATH},  # bubblewrap's own environment: no secret reaches its /proc/<pid>/environ
        pass_fds=(*seccomp_fds, *keep_fds),
        preexec=None,  # bubblewrap sets no_new_privs itself; so does setpriv
        _owned_fds=seccomp_fds,
    )


def nproc_where_it_counts(policy: SandboxPolicy, rlimits: Rlimits | None) -> Rlimits | None:
    """``rlimits`` without RLIMIT_NPROC where that limit would count the daemon's own tasks.

    RLIMIT_NPROC counts every task (threads included) of the real uid in the process's user namespace.  In
    bubblewrap's own user namespace (a non-root daemon) that is the sandbox's tasks only; after the drop
    to MACHINA_TOOL_UID (a root daemon) it is every task of the tool uid, which only tools use.  Without
    either (the fallback of a non-root daemon) it would be every task of the daemon's uid -- the worker's
    threads, the other services' -- so a driver could not even start a thread: the limit is left out there,
    and the cgroup's TasksMax= of the unit bounds the tasks instead.
    """
    if rlimits is None or not rlimits.nproc or policy.bwrap is not None or policy.drops_privileges:
        return rlimits
    return replace(rlimits, nproc=0)


def _namespace_args(policy: SandboxPolicy, network: bool) -> list[str]:
    args = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        args.append("--unshare-net")
    args += ["--hostname", SANDBOX_HOSTNAME, "--die-with-parent", "--new-session"]
    if policy.drops_privileges:
        # bubblewrap runs as root: no user namespace (it would map the tool to uid 0 outside); capabilities
        # are dropped to the three needed to become the tool uid, which the drop then clears.
        args += ["--cap-drop", "ALL"]
        for cap in _DROP_CAPS:
            args += ["--cap-add", cap]
    else:
        args += ["--unshare-user", "--disable-userns"]
    return args


def _mount_args(ro_paths: Iterable[str], devices: Iterable[str], tmp_mb: int) -> list[str]:
    ro_paths = sorted({os.path.realpath(p) for p in ro_paths})
    in_etc = [p for p in ro_paths if p.startswith("/etc/") and os.path.exists(p)]
    args = ["--ro-bind", "/usr", "/usr"]
    for name in MERGED_USR_LINKS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    # A copy of a short list (never /etc/shadow), holding mount points for what is bound below /etc (the
    # policy scripts in /etc/machina/policies): the view is read-only inside, so they cannot be made there.
    args += ["--ro-bind", default_view().path(mountpoints=in_etc), "/etc"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(tmp_mb * _MIB), "--perms", "1777", "--tmpfs", SANDBOX_TMP]  # writable by the tool uid
    args += _extra_binds(ro_paths)
    for device in devices:
        args += ["--dev-bind-try", device, device]
    return args


def _extra_binds(paths: Iterable[str]) -> list[str]:
    """Read-only binds at the same place, with their parent directories created traversable (0755).

    bubblewrap would otherwise copy restrictive modes of the host's parents (``/root`` is 0700), and an
    unprivileged tool could not reach an interpreter bound below them.
    """
    # The private /tmp is not in the list: a bind below it (a checkout under the host's /tmp) lands on the
    # fresh tmpfs, which stays empty otherwise; it must not be skipped as "already visible".
    bound = ["/usr", "/proc", "/dev"]
    made: set[str] = {SANDBOX_TMP}
    args: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths}, key=lambda p: (p.count("/"), p)):
        if not os.path.exists(path) or _covered(path, bound) or path == "/etc":
            continue
        if path.startswith("/etc/"):  # its mount point is in the /etc view already
            args += ["--ro-bind", path, path]
            bound.append(path)
            continue
        for parent in _ancestors(path):
            if parent not in made and not _covered(parent, bound):
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += ["--ro-bind", path, path]
        bound.append(path)
    return args


def _covered(path: str, bound: Iterable[str]) -> bool:
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in bound)


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _setpriv(policy: SandboxPolicy) -> list[str]:
    return [
        SETPRIV,
        f"--reuid={policy.tool_uid}",
        f"--regid={policy.tool_gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def _prlimit(rlimits: Rlimits | None) -> list[str]:
    """``prlimit`` options setting soft and hard limits (0 = leave unlimited), run first inside the sandbox."""
    if rlimits is None:
        return []
    options = [
        f"--{name}={value}"
        for name, value in (
            ("cpu", rlimits.cpu_sec),
            ("as", rlimits.as_mb * _MIB),
            ("fsize", rlimits.fsize_mb * _MIB),
            ("nofile", rlimits.nofile),
            ("nproc", rlimits.nproc),
        )
        if value
    ]
    return [PRLIMIT, *options, "--"] if options else []


def _prepare_fallback(
    policy: SandboxPolicy,
    command: Sequence[str],
    profile: str,
    cwd: str,
    env: Mapping[str, str] | None,
    drop_in_process: bool,
    keep_fds: Sequence[int],
    rlimits: Rlimits | None,
) -> Launch:
    """No bubblewrap: the same process without namespaces; a private scratch directory stands in for /tmp.

    Nothing runs between fork and exec (the toolhost is threaded): :mod:`machina.sandbox.fallback`, a
    program of its own, sets the process up and then execs ``command``.
    """
    if cwd != SANDBOX_TMP:
        raise SandboxUnavailable(f"cwd {cwd!r} needs bubblewrap: without it a tool runs in a private scratch dir")
    scratch = tempfile.mkdtemp(prefix="tool-", dir=scratch_parent())
    if policy.drops_privileges:
        assert policy.tool_uid is not None and policy.tool_gid is not None
        os.chown(scratch, policy.tool_uid, policy.tool_gid)
    programs = [*(seccomp.bpf_programs(profile) if policy.seccomp else ()), seccomp.session_guard_program()]
    program_fds = [seccomp.memfd_of(program) for program in programs]
    drop = policy.drops_privileges and not drop_in_process
    argv = fallback.arguments(
        list(command),
        os.getpid(),
        rlimits,
        policy.tool_uid if drop else None,
        policy.tool_gid if drop else None,
        program_fds,
    )
    return Launch(
        argv=argv,
        env=base_environment(env, home=scratch),
        pass_fds=(*program_fds, *keep_fds),
        preexec=None,
        cwd=scratch,
        _owned_fds=program_fds,
        _scratch=scratch,
    )


def scratch_parent() -> str:
    """``$TMPDIR/machina-tool.<pid>`` (0711: the tool uid reaches only its own 0700 directory inside); the
    scratch of each launch is removed when its process ends, the parent at :func:`close_scratch` or exit,
    and a killed predecessor's parent at the next first launch."""
    return scratch_dir(SCRATCH_PREFIX, 0o711)


def close_scratch() -> None:
    """Remove the fallback's scratch parent (a clean stop of whoever launched sandboxes)."""
    owned_close_scratch(SCRATCH_PREFIX)


def python_paths() -> list[str]:
    """Host paths a Python executor needs inside the sandbox: the interpreter, its packages, Machina.

    Machina's own package directory is bound rather than a checkout holding it (tests, .git stay outside).
    """
    import machina

    package_dir = os.path.dirname(os.path.abspath(machina.__file__))
    return sorted(p for p in {sys.base_prefix, sys.prefix, package_dir} if os.path.isdir(p))

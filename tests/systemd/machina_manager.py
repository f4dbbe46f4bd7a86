"""A real ``systemd --user`` manager for tests, set up exactly as shared/spec/SYSTEMD-TESTING.md says.

1. a fresh cgroup in each v1 hierarchy and in the v2 ``unified`` mount, with the launching shell moved into it
   (otherwise ``systemd --user`` started as root moves every process of the root cgroup into ``/init.scope``);
2. a private mount namespace (``unshare --mount --propagation private``) with a tmpfs on ``/run/systemd``,
   ``/run/systemd/system`` and the ``/run/systemd/inaccessible`` nodes (mode 000) that ``ProtectHome=`` and
   ``ProtectKernel*=`` bind over paths;
3. ``systemd --user`` with a private ``XDG_RUNTIME_DIR``, ``HOME`` and ``XDG_*`` directories, waited on until
   ``is-system-running`` says ``running``;
4. cleanup: stop the manager (TERM, wait, KILL), then remove the test cgroups depth-first.

Never ``systemd --system``: its boot units empty /tmp for every process on the machine.  The manager's default
unit is an empty target of our own, and the distribution's user units that would touch anything outside the
test's directories (tmpfiles, gpg-agent sockets) are masked.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

CGROUP_BASE = Path("/sys/fs/cgroup")
HIERARCHIES = ("systemd", "unified", "memory", "pids", "cpu", "cpuacct", "devices", "freezer", "blkio")
SYSTEMD = "/lib/systemd/systemd"
INACCESSIBLE = ("reg", "dir", "chr", "blk", "fifo", "sock")
# Distribution user units that would act outside the test's private directories.
MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
    "dirmngr.socket",
    "gpg-agent.socket",
    "gpg-agent-browser.socket",
    "gpg-agent-extra.socket",
    "gpg-agent-ssh.socket",
    "pk-debconf-helper.socket",
    "dbus.socket",
)
IDLE_TARGET = "machina-test-idle.target"


class ManagerError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a user manager cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (cgroups and a private mount namespace)"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} not found"
    missing = [h for h in HIERARCHIES if not (CGROUP_BASE / h).is_dir()]
    if missing:
        return f"cgroup hierarchies missing: {', '.join(missing)}"
    for tool in ("unshare", "nsenter"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            return f"{tool} not found"
    return None


class UserManager:
    """``with UserManager(tmp_path) as m: m.systemctl("start", "x.service")``."""

    def __init__(
        self, workdir: Path, extra_env: dict[str, str] | None = None, system_users: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.name = f"machina-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.runtime_dir = workdir / "xdg-runtime"
        self.home = workdir / "home"
        self.config_home = workdir / "xdg-config"
        self.state_home = workdir / "xdg-state"
        self.cache_home = workdir / "xdg-cache"
        self.data_home = workdir / "xdg-data"
        self.unit_dir = self.config_home / "systemd" / "user"
        self.log = workdir / "manager.log"
        self.extra_env = dict(extra_env or {})
        self.system_users = system_users
        self.uids: dict[str, int] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._cgroups: list[Path] = []

    # --- environment ---------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_CACHE_HOME": str(self.cache_home),
            "XDG_DATA_HOME": str(self.data_home),
            "LANG": "C.UTF-8",
            **self.extra_env,
        }

    def _prepare_dirs(self) -> None:
        for d in (self.runtime_dir, self.home, self.state_home, self.cache_home, self.data_home, self.unit_dir):
            d.mkdir(parents=True, exist_ok=True)
        # the services run as another user (DynamicUser=) and must reach the notify socket in here
        self.workdir.chmod(0o755)
        self.runtime_dir.chmod(0o755)
        for unit in MASKED:
            link = self.unit_dir / unit
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        self._write_user_db()
        (self.unit_dir / IDLE_TARGET).write_text(
            "[Unit]\nDescription=Idle default target of the Machina test manager\n"
        )

    def _write_user_db(self) -> None:
        """Copies of /etc/passwd and /etc/group with the system users the units name (like sysusers.d would
        create them), bind-mounted over the originals inside the private mount namespace only."""
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        taken = {int(line.split(":")[2]) for line in passwd.splitlines() + group.splitlines() if line.count(":") >= 3}
        free = (n for n in range(999, 100, -1) if n not in taken)
        for name in self.system_users:
            if f"\n{name}:" in "\n" + passwd:
                continue
            uid = next(free)
            self.uids[name] = uid
            passwd += f"{name}:x:{uid}:{uid}:Machina test user:/nonexistent:/usr/sbin/nologin\n"
            group += f"{name}:x:{uid}:\n"
        (self.workdir / "passwd").write_text(passwd)
        (self.workdir / "group").write_text(group)
        for f in ("passwd", "group"):
            (self.workdir / f).chmod(0o644)

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> UserManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        self._prepare_dirs()
        self._make_cgroups()
        cgroup_moves = "; ".join(f"echo $$ > {shlex.quote(str(cg / 'cgroup.procs'))}" for cg in self._cgroups)
        inaccessible = "/run/systemd/inaccessible"
        namespace_setup = " && ".join(
            [
                f"mount --bind {shlex.quote(str(self.workdir / 'passwd'))} /etc/passwd",
                f"mount --bind {shlex.quote(str(self.workdir / 'group'))} /etc/group",
                "mount -t tmpfs -o mode=0755 tmpfs /run/systemd",
                "mkdir /run/systemd/system",
                f"mkdir -m 0755 {inaccessible}",
                f"touch {inaccessible}/reg",
                f"mkdir {inaccessible}/dir",
                f"mknod {inaccessible}/chr c 0 0",
                f"mknod {inaccessible}/blk b 0 0",
                f"mkfifo {inaccessible}/fifo",
                f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{inaccessible}/sock\")'",
                f"chmod 000 {inaccessible}/reg {inaccessible}/dir {inaccessible}/chr {inaccessible}/blk "
                f"{inaccessible}/fifo {inaccessible}/sock",
                f"exec {SYSTEMD} --user --unit={IDLE_TARGET} --log-target=console --log-level=debug",
            ]
        )
        script = (
            f"set -e; {cgroup_moves}; "
            f"exec unshare --mount --propagation private -- /bin/sh -c {shlex.quote('set -e; ' + namespace_setup)}"
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", script],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ManagerError(f"systemd --user exited with {self.proc.returncode}:\n{self.log.read_text()}")
            result = self.systemctl("is-system-running", check=False)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                # A user manager's notify socket is its user's only; the system manager's is writable by all,
                # which the services (running as their own user) need for READY=1 and WATCHDOG=1.
                (self.runtime_dir / "systemd" / "notify").chmod(0o777)
                return
            time.sleep(0.2)
        raise ManagerError(f"manager not running after {timeout}s (state {state!r}):\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.systemctl("stop", "machina.target", check=False, timeout=timeout)
                self.proc.send_signal(signal.SIGTERM)  # systemd --user exits on SIGTERM, stopping its units
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._kill_cgroup_processes()
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            self._kill_cgroup_processes()
            self._remove_cgroups()

    # --- commands inside the namespace ----------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in the manager's mount namespace, with the manager's environment."""
        assert self.proc is not None
        cmd = ["nsenter", "--target", str(self.proc.pid), "--mount", "--", *argv]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ManagerError(f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--user", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "--value", "-p", prop, unit).stdout.strip()

    def wait_for(self, unit: str, prop: str, want: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        value = ""
        while time.monotonic() < deadline:
            value = self.show(unit, prop)
            if value == want:
                return value
            time.sleep(0.2)
        status = self.systemctl("status", unit, check=False)
        raise ManagerError(f"{unit}: {prop}={value!r}, wanted {want!r} after {timeout}s\n{status.stdout}")

    # --- cgroups -------------------------------------------------------------------------------------

    def _make_cgroups(self) -> None:
        for h in HIERARCHIES:
            cg = CGROUP_BASE / h / self.name
            cg.mkdir()
            self._cgroups.append(cg)

    def _kill_cgroup_processes(self) -> None:
        """KILL whatever is still in the test cgroups (only processes this test started live there)."""
        for cg in self._cgroups:
            for procs in sorted(cg.rglob("cgroup.procs"), key=lambda p: len(p.parts), reverse=True):
                for pid in _read_pids(procs):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _remove_cgroups(self) -> None:
        """Remove the test cgroups depth-first (a cgroup directory goes only once its children are gone)."""
        deadline = time.monotonic() + 15
        for cg in self._cgroups:
            if not cg.exists():
                continue
            subdirs = sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*subdirs, cg]:
                while True:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        self._kill_cgroup_processes()
                        time.sleep(0.1)
        self._cgroups.clear()


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return []

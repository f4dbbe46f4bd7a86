"""Running the external policy driver (MACHINA_POLICY_CMD) safely.

The command is ``EXECUTABLE SCRIPT [ARGS...]`` (or a single program that is itself under the script root).
Before every run:

- the executable is resolved (a bare name on a fixed PATH, a relative path from MACHINA_ROOT) to its
  canonical, symlink-free path, and that
  path's basename must be in MACHINA_POLICY_ALLOWED_EXE (``python3`` also admits a versioned
  ``python3.11``: Debian's python3 is a link to it);
- the script is resolved to its canonical path (relative paths are relative to MACHINA_ROOT) and must be a
  regular file under the canonical MACHINA_POLICY_ALLOWED_SCRIPT_ROOT (default ``/etc/machina/policies``,
  outside MACHINA_ROOT, where no job can write), so a symlink out of the root is refused; interpreter
  options before it (``python3 -c ...``) are refused;
- the canonical paths, not the configured ones, are what is executed.

The driver runs in the sandbox every tool runs in (:func:`machina.sandbox.sandboxed_run`, the ``net``
seccomp profile and the host's network, since a driver may ask a model over HTTP): its own mount, pid, ipc
and uts namespaces, a fresh root that shows the system read-only plus exactly what it needs -- the script
root, the interpreter's installation, Machina's Python paths (a driver may import ``machina.llm``) and the
payload -- and nothing of MACHINA_ROOT; a cleared environment (PATH, LANG, HOME and TMPDIR on the
sandbox's private /tmp); the MACHINA_POLICY_RLIMIT_* limits (RLIMIT_NPROC counts the sandbox's own tasks:
see :mod:`machina.sandbox.launch`); and, when the worker is root, the tool uid.  The payload goes into a
0600 file in a private 0700 temporary directory (owned by the uid the driver runs as), whose path is the
last argument.  MACHINA_POLICY_TIMEOUT_MS kills the whole sandbox on expiry, and
MACHINA_POLICY_STDOUT_MAX is a failure, not a truncation, when exceeded.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from machina.audit.canonical import canonical
from machina.fsutil import PRIVATE_FILE
from machina.owned import scratch_dir
from machina.proc import Rlimits

# The sandbox's modules (bubblewrap, seccomp, /etc views: a tenth of a job child's imports) are imported
# where a driver is configured or run: most children never run one, and each pays for its imports at start.
if TYPE_CHECKING:
    from machina.config import Config
    from machina.sandbox.policy import SandboxPolicy

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
STDERR_MAX = 4096

# Failure codes, as run logs and metrics name them.
NOT_CONFIGURED = "not_configured"
BREAKER_OPEN = "breaker_open"
EXE_NOT_ALLOWED = "exe_not_allowed"
SCRIPT_NOT_ALLOWED = "script_not_allowed"
START_FAILED = "start_failed"
TIMEOUT = "timeout"
EXIT_STATUS = "exit_status"
OVERSIZED = "oversized"
GARBAGE = "garbage"
UNKNOWN_SID = "unknown_sid"
RESERVED_KEY = "reserved_key"


class PolicyFailure(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class DriverSettings:
    argv: tuple[str, ...]
    timeout_s: float
    stdout_max: int
    allowed_exe: tuple[str, ...]
    script_root: str
    base_dir: str  # relative script paths are relative to this (MACHINA_ROOT)
    sandbox: SandboxPolicy
    rlimits: Rlimits = field(default_factory=Rlimits)

    @classmethod
    def from_config(cls, cfg: Config, root_path: str) -> DriverSettings | None:
        """The driver's settings, or None when MACHINA_POLICY_CMD is not set."""
        argv = cfg["MACHINA_POLICY_CMD"]
        if not argv:
            return None
        from machina.sandbox.policy import resolve_policy, verify

        return cls(
            argv=tuple(argv),
            timeout_s=cfg["MACHINA_POLICY_TIMEOUT_MS"] / 1000,
            stdout_max=cfg["MACHINA_POLICY_STDOUT_MAX"],
            allowed_exe=tuple(cfg["MACHINA_POLICY_ALLOWED_EXE"]),
            script_root=cfg["MACHINA_POLICY_ALLOWED_SCRIPT_ROOT"],
            base_dir=root_path,
            sandbox=verify(cfg, resolve_policy(cfg)),
            rlimits=Rlimits(
                cpu_sec=cfg["MACHINA_POLICY_RLIMIT_CPU_SEC"],
                as_mb=cfg["MACHINA_POLICY_RLIMIT_AS_MB"],
                fsize_mb=cfg["MACHINA_POLICY_RLIMIT_FSIZE_MB"],
                nofile=cfg["MACHINA_POLICY_RLIMIT_NOFILE"],
                nproc=cfg["MACHINA_POLICY_RLIMIT_NPROC"],
            ),
        )


def _within(path: str, directory: str) -> bool:
    return os.path.commonpath([directory, path]) == directory


def exe_allowed(canonical_path: str, allowed: tuple[str, ...]) -> bool:
    """The canonical basename is allowed as is, or as an allowed name plus a version (python3 -> python3.11)."""
    name = os.path.basename(canonical_path)
    return any(re.fullmatch(re.escape(a) + r"(\.?[0-9]+(\.[0-9]+)*)?", name) for a in allowed)


class PolicyDriver:
    def __init__(self, settings: DriverSettings) -> None:
        self.settings = settings

    def resolve(self) -> list[str]:
        """The argv to execute, with canonical paths; PolicyFailure when the allowlists refuse it."""
        argv = list(self.settings.argv)
        exe = self._canonical_exe(argv[0])
        if len(argv) == 1:
            self._check_script(exe)  # a lone program must itself live under the script root
            return [exe]
        if argv[1].startswith("-"):
            raise PolicyFailure(
                SCRIPT_NOT_ALLOWED, f"{argv[1]!r}: the script must follow the executable (no interpreter options)"
            )
        script = os.path.realpath(os.path.join(self.settings.base_dir, argv[1]))
        self._check_script(script)
        return [exe, script, *argv[2:]]

    def _canonical_exe(self, name: str) -> str:
        found = shutil.which(name, path=SAFE_PATH) if "/" not in name else os.path.join(self.settings.base_dir, name)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise PolicyFailure(EXE_NOT_ALLOWED, f"{name!r}: no such executable")
        canonical_path = os.path.realpath(found)
        if not exe_allowed(canonical_path, self.settings.allowed_exe):
            raise PolicyFailure(
                EXE_NOT_ALLOWED,
                f"{name!r} is {canonical_path}, whose name is not in MACHINA_POLICY_ALLOWED_EXE",
            )
        return canonical_path

    def _write_payload(self, private: str, payload: dict[str, Any]) -> str:
        """The payload in a 0600 file of a 0700 directory, both owned by the uid the driver runs as."""
        path = os.path.join(private, "payload.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(canonical(payload))
        sandbox = self.settings.sandbox
        if sandbox.drops_privileges:
            assert sandbox.tool_uid is not None and sandbox.tool_gid is not None
            for owned in (private, path):
                os.chown(owned, sandbox.tool_uid, sandbox.tool_gid)
        return path

    def _visible(self, exe: str, private: str) -> list[str]:
        """What the sandbox shows read-only: scripts, the interpreter's installation, Machina, the payload."""
        from machina.sandbox.launch import python_paths

        scripts = os.path.realpath(self.settings.script_root)
        paths = [scripts, *python_paths(), private]
        installation = os.path.dirname(os.path.dirname(exe))  # /opt/python3.12/bin/python3 -> /opt/python3.12
        root = os.path.realpath(self.settings.base_dir)
        if installation != "/" and not _within(exe, scripts) and not _within(root, installation):
            paths.append(installation)  # never the whole file system, MACHINA_ROOT, nor a directory holding it
        return paths

    def _check_script(self, path: str) -> None:
        root = os.path.realpath(self.settings.script_root)
        canonical_path = os.path.realpath(path)
        if os.path.commonpath([root, canonical_path]) != root:
            raise PolicyFailure(
                SCRIPT_NOT_ALLOWED, f"{canonical_path} is outside MACHINA_POLICY_ALLOWED_SCRIPT_ROOT ({root})"
            )
        if not os.path.isfile(canonical_path):
            raise PolicyFailure(SCRIPT_NOT_ALLOWED, f"{canonical_path}: not a regular file")

    def run(self, payload: dict[str, Any]) -> str:
        """The driver's stdout for ``payload``; PolicyFailure for every way it can fail."""
        from machina.sandbox.policy import SandboxUnavailable
        from machina.sandbox.run import sandboxed_run

        argv = self.resolve()
        sandbox = self.settings.sandbox
        # 0711: the driver's uid (after a drop) may pass through to its own 0700 directory, not list others
        private = tempfile.mkdtemp(dir=scratch_dir("machina-policy", 0o711))  # swept after a SIGKILL
        try:
            path = self._write_payload(private, payload)
            try:
                result = sandboxed_run(
                    [*argv, path],
                    policy=sandbox,
                    profile="net",
                    network=True,
                    timeout_s=self.settings.timeout_s,
                    stdout_max=self.settings.stdout_max,
                    stderr_max=STDERR_MAX,
                    rlimits=self.settings.rlimits,
                    ro_paths=self._visible(argv[0], private),
                )
            except (OSError, SandboxUnavailable) as exc:
                detail = getattr(exc, "strerror", None) or exc
                raise PolicyFailure(START_FAILED, f"cannot start {argv[0]}: {detail}") from None
        finally:
            shutil.rmtree(private, ignore_errors=True)
        if result.stderr:
            log.debug("policy driver stderr: %s", result.stderr.decode("utf-8", "replace")[-1000:])
        if result.timed_out:
            raise PolicyFailure(TIMEOUT, f"no reply within {self.settings.timeout_s:g} s")
        if result.stdout_truncated:
            raise PolicyFailure(OVERSIZED, f"more than {self.settings.stdout_max} bytes on stdout")
        if result.exit_code != 0:
            how = f"killed by signal {-result.exit_code}" if result.exit_code < 0 else f"exit {result.exit_code}"
            raise PolicyFailure(EXIT_STATUS, how)
        try:
            return result.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyFailure(GARBAGE, "stdout is not UTF-8") from None

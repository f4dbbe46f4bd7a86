"""AID.SHELL.EXEC.v1: one allowlisted program, an argv array, a fresh sandbox.  No shell, ever.

``cmd[0]`` is a program name (looked up on the sandbox's fixed PATH) or an absolute path.  It is resolved
to its canonical path (every symlink followed) and the *canonical* basename must be in
MACHINA_SHELL_ALLOWED_EXE: a link named ``cat`` that points at ``bash`` is ``bash``.  The canonical path
is what runs, so the check and the execution name the same file.  It must lie in the system directories
the sandbox shows (``/usr`` and the merged-usr links).

``cwd`` is a directory inside the sandbox (default ``/tmp``, its private scratch space); the working root
is not visible to this tool.  ``timeout_ms``, ``stdout_max`` and ``stderr_max`` can only lower the
configured MACHINA_SHELL_* limits.  A non-zero exit is a tool error whose output still carries exit code,
stdout and stderr.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from dataclasses import dataclass
from typing import Any

from machina import toolapi
from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, sandboxed_run
from machina.sandbox.launch import SANDBOX_PATH, SANDBOX_TMP
from machina.tools.base import ToolFailure, cap

SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")


@dataclass(frozen=True)
class ShellSettings:
    allowed: tuple[str, ...]
    timeout_ms: int
    stdout_max: int
    stderr_max: int
    rlimits: Rlimits


def resolve_executable(name: str, allowed: tuple[str, ...]) -> str:
    """The canonical path of an allowed program; ToolFailure (denied) for anything else."""
    if "/" in name:
        if not name.startswith("/"):
            raise ToolFailure(f"{name!r}: give a program name or an absolute path", status=toolapi.DENIED)
        path = name
    else:
        found = shutil.which(name, path=SANDBOX_PATH)
        if found is None:
            raise ToolFailure(f"{name!r}: no such program on {SANDBOX_PATH}")
        path = found
    canonical = os.path.realpath(path)
    base = os.path.basename(canonical)
    if base not in allowed:
        shown = name if canonical == name else f"{name} -> {canonical}"
        raise ToolFailure(f"{shown}: {base!r} is not in MACHINA_SHELL_ALLOWED_EXE", status=toolapi.DENIED)
    if not canonical.startswith(SYSTEM_DIRS):
        raise ToolFailure(f"{canonical}: outside the system directories a sandbox shows", status=toolapi.DENIED)
    if not (os.path.isfile(canonical) and os.access(canonical, os.X_OK)):
        raise ToolFailure(f"{canonical}: not an executable file")
    return canonical


def check_cwd(cwd: str) -> str:
    if not cwd.startswith("/") or posixpath.normpath(cwd) != (cwd.rstrip("/") or "/") or "\x00" in cwd:
        raise ToolFailure(f"cwd {cwd!r}: expected an absolute, normalised directory inside the sandbox")
    return cwd.rstrip("/") or "/"


def shell_exec(inputs: dict[str, Any], policy: SandboxPolicy, settings: ShellSettings) -> dict[str, Any]:
    argv = list(inputs["cmd"])
    exe = resolve_executable(argv[0], settings.allowed)
    cwd = check_cwd(inputs.get("cwd", SANDBOX_TMP))
    timeout_ms = cap(inputs.get("timeout_ms"), settings.timeout_ms)
    try:
        result = sandboxed_run(
            [exe, *argv[1:]],
            policy=policy,
            timeout_s=timeout_ms / 1000.0,
            stdout_max=cap(inputs.get("stdout_max"), settings.stdout_max),
            stderr_max=cap(inputs.get("stderr_max"), settings.stderr_max),
            cwd=cwd,
            rlimits=settings.rlimits,
        )
    except OSError as exc:
        raise ToolFailure(f"cannot start {exe}: {exc.strerror}", status=toolapi.SANDBOX_ERROR) from None
    output = {
        "exe": exe,
        "exit_code": result.exit_code,
        "stdout": result.stdout.decode("utf-8", errors="replace"),
        "stderr": result.stderr.decode("utf-8", errors="replace"),
        "timed_out": result.timed_out,
        "truncated": result.stdout_truncated or result.stderr_truncated,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
    }
    if result.timed_out:
        raise ToolFailure(f"{exe} ran past {timeout_ms} ms and was killed", status=toolapi.TIMEOUT, output=output)
    if result.exit_code != 0:
        raise ToolFailure(f"{exe} exited with status {result.exit_code}", output=output)
    return output

"""AID.CODE.EXEC.v1: a short Python or shell source run in a fresh sandbox, like one AID.SHELL.EXEC.v1 call.

Python runs as ``python3 -I -c SOURCE`` (isolated: no environment variables, no user site, no current
directory on the path) with the system interpreter; ``sh`` runs as ``/bin/sh -c SOURCE``.  Either is the
sandboxed process itself, in a new bubblewrap per call: no view of MACHINA_ROOT, a private ``/tmp`` as its
working directory, no network.  ``network: true`` asks for the ``net`` profile, and the toolhost runs such a
call only with a lease, whatever the permission mode (see machina.toolhost.calls).

The wall-clock limit is MACHINA_CODE_TIMEOUT (a caller's ``timeout_ms`` can only lower it); output caps and
rlimits are the shell tool's (MACHINA_SHELL_*), with the CPU-time limit raised to the wall-clock one.
Python source that does not compile goes through the auto-fix
(:mod:`machina.tools.autofix`) unless ``autofix`` is false; the layers applied and the diff come back in
``autofix``.  Source that still does not compile is a tool error and nothing runs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from machina import toolapi
from machina.proc import Rlimits
from machina.sandbox import SandboxPolicy, sandboxed_run
from machina.tools.autofix import autofix
from machina.tools.base import ToolFailure, cap

SHELL = "/bin/sh"
SYSTEM_PYTHON = "/usr/bin/python3"
MAX_SOURCE_BYTES = 100_000  # one argv string; the kernel's limit (MAX_ARG_STRLEN) is 128 KiB


@dataclass(frozen=True)
class CodeSettings:
    timeout_ms: int
    stdout_max: int
    stderr_max: int
    rlimits: Rlimits


def interpreter() -> tuple[str, list[str]]:
    """The Python that runs the code, and host paths to bind for it (none for the system one under /usr)."""
    if os.access(SYSTEM_PYTHON, os.X_OK):
        return os.path.realpath(SYSTEM_PYTHON), []
    base = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    return os.path.realpath(base), [sys.base_prefix]


def prepare_source(inputs: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The source to run and the auto-fix report (None when the source ran as given)."""
    source = inputs["code"]
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise ToolFailure(f"code is over {MAX_SOURCE_BYTES} bytes")
    if "\x00" in source:
        raise ToolFailure("code contains a NUL character")
    if inputs.get("lang", "python") != "python" or not inputs.get("autofix", True):
        return source, None
    fixed = autofix(source)
    if not fixed.layers and fixed.compiles:
        return source, None
    report = {"layers": list(fixed.layers), "diff": fixed.diff, "compiles": fixed.compiles}
    if not fixed.compiles:
        raise ToolFailure(f"the code does not compile ({fixed.error}); nothing was run", output={"autofix": report})
    return fixed.source, report


def code_exec(inputs: dict[str, Any], policy: SandboxPolicy, settings: CodeSettings) -> dict[str, Any]:
    source, report = prepare_source(inputs)
    output = run_source(source, inputs, policy, settings, extra=({"autofix": report} if report is not None else {}))
    return output


def run_source(
    source: str,
    inputs: dict[str, Any],
    policy: SandboxPolicy,
    settings: CodeSettings,
    *,
    args: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``source`` (``inputs`` gives lang, stdin, network and the limits) with ``args`` as its arguments."""
    lang = inputs.get("lang", "python")
    binds: list[str] = []
    if lang == "sh":
        argv = [SHELL, "-c", source, "sh", *(args or [])]
    else:
        python, binds = interpreter()
        argv = [python, "-I", "-c", source, *(args or [])]
    timeout_ms = cap(inputs.get("timeout_ms"), settings.timeout_ms)
    try:
        result = sandboxed_run(
            argv,
            policy=policy,
            timeout_s=timeout_ms / 1000.0,
            stdout_max=cap(inputs.get("stdout_max"), settings.stdout_max),
            stderr_max=cap(inputs.get("stderr_max"), settings.stderr_max),
            stdin=inputs.get("stdin", "").encode("utf-8"),
            network=bool(inputs.get("network", False)),
            rlimits=settings.rlimits,
            ro_paths=binds,
        )
    except OSError as exc:
        raise ToolFailure(f"cannot start {argv[0]}: {exc.strerror}", status=toolapi.SANDBOX_ERROR) from None
    output: dict[str, Any] = {
        "lang": lang,
        "exit_code": result.exit_code,
        "stdout": result.stdout.decode("utf-8", errors="replace"),
        "stderr": result.stderr.decode("utf-8", errors="replace"),
        "timed_out": result.timed_out,
        "truncated": result.stdout_truncated or result.stderr_truncated,
        "duration_ms": round(result.duration_ms, 3),
        **(extra or {}),
    }
    if result.timed_out:
        raise ToolFailure(f"the code ran past {timeout_ms} ms and was killed", status=toolapi.TIMEOUT, output=output)
    if result.exit_code != 0:
        raise ToolFailure(f"the code exited with status {result.exit_code}", output=output)
    return output

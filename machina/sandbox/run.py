"""``sandboxed_run()``: run one external program in a fresh sandbox and wait for it, with every bound."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from machina.proc import BoundedResult, Rlimits, run_bounded
from machina.sandbox.launch import SANDBOX_TMP, prepare
from machina.sandbox.policy import SandboxPolicy


def sandboxed_run(
    argv: Sequence[str],
    *,
    policy: SandboxPolicy,
    timeout_s: float,
    stdout_max: int,
    stderr_max: int,
    stdin: bytes | None = None,
    profile: str | None = None,
    network: bool = False,
    cwd: str = SANDBOX_TMP,
    env: Mapping[str, str] | None = None,
    rlimits: Rlimits | None = None,
    ro_paths: Iterable[str] = (),
    devices: Iterable[str] = (),
) -> BoundedResult:
    """Run ``argv`` (argv[0] an absolute path inside the sandbox; no shell is involved) in a new sandbox.

    The timeout kills bubblewrap's process group, and with it the sandbox's pid namespace: nothing the
    program started outlives the call.  Output beyond a cap is discarded and reported as truncated.
    Raises OSError when bubblewrap (or, without it, the program) cannot be started.
    """
    launch = prepare(
        policy,
        argv,
        profile=profile,
        network=network,
        cwd=cwd,
        env=env,
        ro_paths=ro_paths,
        devices=devices,
        rlimits=rlimits,
    )
    try:
        return run_bounded(
            launch.argv,
            env=launch.env,
            timeout_s=timeout_s,
            stdout_max=stdout_max,
            stderr_max=stderr_max,
            stdin=stdin,
            cwd=launch.cwd,
            pass_fds=launch.pass_fds,
            preexec=launch.preexec,
        )
    finally:
        launch.finished()

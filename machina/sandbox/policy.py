"""How this machine's sandbox is set up: bubblewrap or the fallback, seccomp, the tool uid, /tmp size.

The bubblewrap decision follows OPERATIONS.md ("Bubblewrap sandbox enforcement") exactly:

* ``MACHINA_BWRAP_REQUIRED=1``: no usable bwrap is a hard failure (:class:`SandboxUnavailable`);
* ``MACHINA_PROFILE=prod``: a WARNING is logged and tools run without namespaces;
* ``dev``: the same fallback, silently (one DEBUG line).

"Usable" means found and able to start a sandbox here (:func:`probe`): a bwrap that cannot create its
namespaces (user namespaces disabled for a non-root toolhost, say) counts as missing.  The bwrap path is
injectable (``resolve_policy(cfg, bwrap=...)``, ``machina-toolhost --bwrap PATH``) so tests can point it at
a missing file.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from machina.exitcodes import ExitCode, MachinaError
from machina.sandbox import seccomp

if TYPE_CHECKING:
    from machina.config import Config

log = logging.getLogger(__name__)


class SandboxUnavailable(MachinaError):
    """The sandbox cannot be set up and running without it is not allowed."""

    exit_code = ExitCode.UNAVAILABLE


@dataclass(frozen=True)
class SandboxPolicy:
    bwrap: str | None  # None: no namespaces (the documented fallback)
    seccomp: bool  # load the seccomp profile into tool processes
    default_profile: str  # the seccomp profile of tools that do not need the network: strict, or net if asked
    tool_uid: int | None  # uid tools run as; None when the toolhost is not root (tools keep its uid)
    tool_gid: int | None
    tmp_mb: int = 64
    fallback_reason: str = ""  # why bwrap is not used, when it is not

    @property
    def drops_privileges(self) -> bool:
        return self.tool_uid is not None

    def without_bwrap(self, reason: str) -> SandboxPolicy:
        return replace(self, bwrap=None, fallback_reason=reason)


def resolve_policy(cfg: Config, bwrap: str | None = None) -> SandboxPolicy:
    """The policy the configuration asks for; bwrap is looked up on PATH unless a path is given.

    Raises SandboxUnavailable when bwrap is missing and MACHINA_BWRAP_REQUIRED=1.
    """
    root = os.geteuid() == 0
    policy = SandboxPolicy(
        bwrap=None,
        seccomp=bool(cfg["MACHINA_SECCOMP_ENABLE"]),
        default_profile=cfg.seccomp_profile,
        tool_uid=cfg["MACHINA_TOOL_UID"] if root else None,
        tool_gid=cfg["MACHINA_TOOL_GID"] if root else None,
        tmp_mb=cfg["MACHINA_SANDBOX_TMP_MB"],
    )
    if policy.seccomp:
        for profile in seccomp.PROFILES:
            seccomp.bpf_programs(profile)  # fail now, not on the first tool call, if libseccomp cannot
    path = bwrap if bwrap is not None else shutil.which("bwrap")
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return replace(policy, bwrap=path)
    reason = f"bubblewrap not found at {path}" if path else "bubblewrap (bwrap) not found on PATH"
    return fall_back(cfg, policy, reason)


def fall_back(cfg: Config, policy: SandboxPolicy, reason: str) -> SandboxPolicy:
    """Apply the REQUIRED / prod / dev rule to a bwrap that is missing or unusable."""
    if cfg["MACHINA_BWRAP_REQUIRED"]:
        raise SandboxUnavailable(
            f"{reason}; MACHINA_BWRAP_REQUIRED=1 forbids running tools without it (install bubblewrap)"
        )
    if cfg["MACHINA_PROFILE"] == "prod":
        log.warning(
            "%s: tools run WITHOUT namespace isolation (install bubblewrap or set MACHINA_BWRAP_REQUIRED=1)",
            reason,
        )
    else:
        log.debug("%s: tools run without namespace isolation (dev profile)", reason)
    return policy.without_bwrap(reason)


def verify(cfg: Config, policy: SandboxPolicy) -> SandboxPolicy:
    """Start one sandboxed ``true``; a bwrap that cannot is treated like a missing one."""
    if policy.bwrap is None:
        return policy
    from machina.sandbox.run import sandboxed_run

    try:
        result = sandboxed_run(["true"], policy=policy, timeout_s=30, stdout_max=4096, stderr_max=4096)
    except OSError as exc:
        return fall_back(cfg, policy, f"bubblewrap at {policy.bwrap} cannot start: {exc.strerror}")
    if result.exit_code != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        why = detail[-1] if detail else f"exit status {result.exit_code}"
        return fall_back(cfg, policy, f"bubblewrap at {policy.bwrap} cannot start a sandbox here: {why}")
    return policy

"""The bubblewrap rule of OPERATIONS.md: REQUIRED fails hard, prod warns and falls back, dev falls back silently."""

from __future__ import annotations

import logging
import os

import pytest

from machina import config
from machina.exitcodes import ExitCode
from machina.sandbox import SandboxUnavailable, resolve_policy, sandboxed_run
from machina.sandbox.policy import verify

from .conftest import needs_bwrap

MISSING = "/nonexistent/machina-test/bwrap"


def cfg(**env: str) -> config.Config:
    return config.load(environ={"MACHINA_ENV_FILE": "/dev/null", **env})


def test_required_without_bwrap_fails_hard() -> None:
    with pytest.raises(SandboxUnavailable) as caught:
        resolve_policy(cfg(MACHINA_BWRAP_REQUIRED="1"), bwrap=MISSING)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    assert MISSING in str(caught.value) and "MACHINA_BWRAP_REQUIRED=1" in str(caught.value)


def test_prod_without_bwrap_warns_and_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="machina.sandbox.policy"):
        policy = resolve_policy(cfg(MACHINA_PROFILE="prod"), bwrap=MISSING)
    assert policy.bwrap is None and MISSING in policy.fallback_reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "WITHOUT namespace isolation" in warnings[0].getMessage()


def test_dev_without_bwrap_falls_back_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="machina.sandbox.policy"):
        policy = resolve_policy(cfg(), bwrap=MISSING)
    assert policy.bwrap is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_the_fallback_still_runs_tools_bounded(caplog: pytest.LogCaptureFixture) -> None:
    policy = resolve_policy(cfg(MACHINA_SECCOMP_ENABLE="1"), bwrap=MISSING)
    result = sandboxed_run(["/usr/bin/env"], policy=policy, timeout_s=10, stdout_max=4096, stderr_max=4096)
    assert result.exit_code == 0
    assert sorted(line.split("=")[0] for line in result.stdout.decode().splitlines()) == [
        "HOME",
        "LANG",
        "PATH",
        "TMPDIR",
    ]


def test_a_bwrap_that_cannot_start_a_sandbox_counts_as_missing(tmp_path) -> None:
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    dev = cfg()
    policy = verify(dev, resolve_policy(dev, bwrap=str(broken)))
    assert policy.bwrap is None and "No permissions to create new namespace" in policy.fallback_reason
    required = cfg(MACHINA_BWRAP_REQUIRED="1")
    with pytest.raises(SandboxUnavailable, match="cannot start a sandbox here"):
        verify(required, resolve_policy(required, bwrap=str(broken)))


@needs_bwrap
def test_tools_run_as_root_only_if_the_toolhost_is_not_root() -> None:
    policy = resolve_policy(cfg(MACHINA_TOOL_UID="4242", MACHINA_TOOL_GID="4343"))
    if os.geteuid() == 0:
        assert (policy.tool_uid, policy.tool_gid) == (4242, 4343)
    else:
        assert (policy.tool_uid, policy.tool_gid) == (None, None)


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("MACHINA_TOOLHOST_POOL_SIZE", "-1", "an integer from 0 to 16"),
        ("MACHINA_TOOLHOST_POOL_RECYCLE", "0", "an integer from 1 to 1000000"),
        ("MACHINA_SANDBOX_TMP_MB", "lots", "an integer in MiB"),
        ("MACHINA_TOOL_TIMEOUT_MS", "0", "an integer in ms"),
        ("MACHINA_TOOL_RLIMIT_NPROC", "-3", "an integer from 0"),
        ("MACHINA_FILE_READ_MAX_BYTES", "1e6", "an integer in bytes"),
        ("MACHINA_MEMORY_QUERY_MAX_RECORDS", "0", "an integer from 1"),
        ("MACHINA_PERMISSION_OVERRIDES", "AID.SHELL.EXEC.v1=maybe", "AID=allow|ask|deny"),
        ("MACHINA_PERMISSION_OVERRIDES", "shell=deny", "AID=allow|ask|deny"),
        ("MACHINA_LEASE_MAX_TTL_MS", "10", "an integer in ms from 1000"),
        ("MACHINA_TOOLHOST_IDEMPOTENCY_TTL_MS", "soon", "an integer in ms"),
    ],
)
def test_bad_values_of_the_variables_this_part_adds(name: str, value: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        cfg(**{name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and expected in message

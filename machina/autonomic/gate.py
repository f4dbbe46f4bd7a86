"""The regression gate: a change is kept only when the configured test command proves it no worse.

``MACHINA_REGRESSION_CMD`` runs (argv, no shell, its own process group, a timeout) in a scratch copy of
the root where the candidate change has been applied.  Its pass count is read from pytest's summary line
or a plain ``N passed, N failed`` line.  The baseline (``memory/regression_baseline.json``) only rises.

Fails closed (AGENT.md fault 11): a missing command, a command that cannot start, a timeout, output
without a pass count, or fewer passes than the baseline each **reject** the change; the scratch copy is
removed whatever the outcome, so a rejected change leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from machina.clock import Clock
from machina.fsutil import write_atomic
from machina.owned import scratch_dir

BASELINE_FILE = "regression_baseline.json"
OUTPUT_CAP = 1 << 20
# What the scratch copy holds: what the agent may change, plus what the tests read.  Never the queue or logs.
COPIED = ("memory", "plugins", "toolpacks", "goalpacks", "policies", "prompts", "skills", "utils")

_PYTEST = re.compile(r"=+ (?P<body>[^=]*\bin [0-9.]+s[^=]*) =+\s*$", re.MULTILINE)
_PLAIN = re.compile(
    r"^(?:\w+:\s*)?(?P<passed>[0-9]+) passed, (?P<failed>[0-9]+) failed(?:, [0-9]+ skipped)?\s*$", re.MULTILINE
)


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    passed: int | None
    baseline: int
    reason: str


def parse_pass_count(output: str) -> int | None:
    """The number of passed tests, or None when the output says nothing a reader can trust."""
    plain = list(_PLAIN.finditer(output))
    if plain:
        return int(plain[-1]["passed"])
    summaries = list(_PYTEST.finditer(output))
    if not summaries:
        return None
    body = summaries[-1]["body"]
    passed = re.search(r"\b([0-9]+) passed\b", body)
    if passed:
        return int(passed.group(1))
    if re.search(r"\b[0-9]+ (failed|error|errors)\b", body):
        return 0
    return None  # "no tests ran": no proof of anything


def read_baseline(memory_dir: str) -> int:
    try:
        with open(os.path.join(memory_dir, BASELINE_FILE), encoding="utf-8") as handle:
            value = json.load(handle).get("passed", 0)
    except FileNotFoundError:
        return 0
    return int(value) if isinstance(value, int) and value >= 0 else 0


def write_baseline(memory_dir: str, passed: int, clock: Clock) -> None:
    doc = {"passed": passed, "updated_at": clock.time()}
    write_atomic(os.path.join(memory_dir, BASELINE_FILE), json.dumps(doc).encode() + b"\n", fsync=True)


def scratch_copy(root: str, into: str) -> str:
    scratch = os.path.join(into, "root")
    os.makedirs(scratch, mode=0o700)
    for name in COPIED:
        source = os.path.join(root, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(scratch, name), symlinks=True)
    return scratch


def run_command(argv: Sequence[str], cwd: str, env: dict[str, str], timeout_s: float) -> tuple[int | None, str]:
    """(exit status or None on timeout, combined output capped); the whole process group ends either way."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        return status, out.read(OUTPUT_CAP).decode("utf-8", "replace")


def run_gate(
    root: str,
    argv: Sequence[str],
    timeout_s: float,
    clock: Clock,
    *,
    apply_change: Callable[[str], None] | None = None,
    base_env: dict[str, str] | None = None,
) -> GateResult:
    """Gate one candidate: ``apply_change(scratch_root)`` puts it in the scratch copy (None: the root as is)."""
    memory_dir = os.path.join(root, "memory")
    baseline = read_baseline(memory_dir)
    if not argv:
        return GateResult(False, None, baseline, "MACHINA_REGRESSION_CMD is not set: nothing proves the change safe")
    with tempfile.TemporaryDirectory(dir=scratch_dir("machina-gate")) as work:
        scratch = scratch_copy(root, work)
        if apply_change is not None:
            apply_change(scratch)
        env = {**(base_env or {}), "MACHINA_ROOT": scratch}
        try:
            status, output = run_command(argv, scratch, env, timeout_s)
        except OSError as exc:
            return GateResult(False, None, baseline, f"the test command could not start: {exc.strerror or exc}")
    if status is None:
        return GateResult(False, None, baseline, f"the test command ran past {timeout_s:g} s")
    passed = parse_pass_count(output)
    if passed is None:
        return GateResult(False, None, baseline, f"no pass count in the test output (exit status {status})")
    if passed < baseline:
        return GateResult(False, passed, baseline, f"{passed} passed, fewer than the baseline {baseline}")
    if passed > baseline:
        write_baseline(memory_dir, passed, clock)
    return GateResult(True, passed, max(passed, baseline), f"{passed} passed (baseline {baseline})")

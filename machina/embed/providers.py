"""The ``cmd`` embedding provider: an external command (``hash`` is :mod:`machina.embed.hashing`).

The command protocol (MACHINA_EMBED_CMD, run without a shell and with a cleared environment):

    stdin   {"text": "...", "dim": N}            one text
            {"texts": ["...", ...], "dim": N}    several texts
    stdout  {"embedding": [x, ...]}              for "text"
            {"embeddings": [[x, ...], ...]}      for "texts", in order

Exit 0 on success.  The reply must hold exactly one vector per text, each of ``dim`` finite numbers and not
all zero; we L2-normalise it.  Anything else -- a start failure, a non-zero exit or a signal, the
deadline, output that is not that JSON, a wrong dimension or count, NaN or infinity -- is a *failure*:
logged, counted by reason (see :data:`FAILURE_REASONS`), and the caller falls back to ``hash`` for the
whole request, so one answer never mixes vectors from two embedding spaces.

The command runs in the sandbox tools run in (:func:`machina.sandbox.sandboxed_run`, the ``net`` seccomp
profile and the host's network, since a command may call a remote API): no shell, an environment holding
only :data:`COMMAND_ENV` (plus HOME and TMPDIR on the sandbox's private /tmp), the sandbox killed at the
deadline, the configured rlimits (0 = unlimited, as OPERATIONS.md notes for PyTorch), stdout capped at what
``dim`` numbers per text can need.  It sees the system read-only and, read-only too, only what its command
line names (:func:`visible_paths`): the directories of the files it names and the interpreter's
installation (a virtualenv and the Python it was made from) -- never MACHINA_ROOT or the service's
environment.  Relative paths in MACHINA_EMBED_CMD are made absolute against machina-embed's working
directory (``WorkingDirectory=`` under systemd) when the provider is built.

After ``breaker_failures`` failures in a row the breaker opens: for ``breaker_cooldown_ms`` the command is
not run at all (counted as ``skipped``) and ``hash`` answers at once, instead of every request waiting out
the timeout of a broken command.  The first request after the cooldown tries the command again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from machina.clock import SYSTEM_CLOCK, Clock
from machina.embed.ranking import normalise_rows
from machina.log import fields
from machina.proc import BoundedResult, Rlimits
from machina.sandbox.policy import SandboxPolicy, SandboxUnavailable
from machina.sandbox.run import sandboxed_run

log = logging.getLogger(__name__)

FAILURE_REASONS = ("spawn", "exit", "timeout", "garbage", "dim", "count", "nan", "zero")
OUTPUT_BYTES_PER_NUMBER = 32  # generous: "-0.012345678901234567, " is 24
STDERR_MAX = 4096
# The whole environment of the command: no MACHINA_* value, token or secret of the service reaches it.
COMMAND_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class CommandFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CommandSpec:
    argv: tuple[str, ...]
    timeout_ms: int
    rlimits: Rlimits
    batch_max: int
    breaker_failures: int = 3  # 0: never open
    breaker_cooldown_ms: int = 30000
    sandbox: SandboxPolicy = field(kw_only=True)


def absolute_command(argv: tuple[str, ...], cwd: str) -> tuple[str, ...]:
    """``argv`` with relative paths that exist under ``cwd`` made absolute, and a bare program found on PATH."""
    program = argv[0] if "/" in argv[0] else (shutil.which(argv[0], path=COMMAND_ENV["PATH"]) or argv[0])
    absolute = [program, *argv[1:]]
    for i, word in enumerate(absolute):
        if not word.startswith(("/", "-")) and os.path.exists(os.path.join(cwd, word)):
            absolute[i] = os.path.normpath(os.path.join(cwd, word))
    return tuple(absolute)


def visible_paths(argv: tuple[str, ...], hidden: str | None) -> list[str]:
    """What the command's sandbox shows: the directories of the files it names, the interpreter's installation.

    ``/x/venv/bin/python`` gives ``/x/venv`` and the installation its link resolves to; nothing inside, or
    holding, ``hidden`` (MACHINA_ROOT).
    """
    paths = []
    program = argv[0]
    if program.startswith("/"):
        paths += [
            os.path.dirname(os.path.dirname(program)),
            os.path.dirname(os.path.dirname(os.path.realpath(program))),
        ]
    for word in argv[1:]:
        if word.startswith("/") and os.path.exists(word):
            paths.append(word if os.path.isdir(word) else os.path.dirname(word))
    return [p for p in paths if _may_show(os.path.realpath(p), os.path.realpath(hidden) if hidden else None)]


def _may_show(path: str, hidden: str | None) -> bool:
    """Never the whole file system (``/bin/x`` would give ``/``), nor ``hidden``, below it or above it."""
    return path != "/" and (hidden is None or os.path.commonpath([path, hidden]) not in (path, hidden))


class CommandProvider:
    """Runs the embedding command; :meth:`try_embed` gives vectors, or None after a counted failure."""

    name = "cmd"

    def __init__(self, spec: CommandSpec, dim: int, clock: Clock = SYSTEM_CLOCK, hidden: str | None = None) -> None:
        self.spec = spec
        self.hidden = hidden  # MACHINA_ROOT: never shown to the command
        self.dim = dim
        self.clock = clock
        self.failures: Counter[str] = Counter({reason: 0 for reason in FAILURE_REASONS})
        self.runs = 0
        self.runs_ok = 0
        self.skipped = 0
        self._failing_in_a_row = 0
        self._open_until: float | None = None
        self._lock = threading.Lock()
        # One command at a time: a model process is large, and the next request reuses the warm page cache.
        self._one_at_a_time = threading.Semaphore(1)

    @property
    def _visible(self) -> list[str]:
        return visible_paths(self.spec.argv, self.hidden)

    def try_embed(self, texts: list[str]) -> np.ndarray | None:
        """Vectors for ``texts`` (unit rows), or None when any batch failed (the failure is logged and counted)."""
        if self._breaker_open():
            return None
        chunks = [texts[i : i + self.spec.batch_max] for i in range(0, len(texts), self.spec.batch_max)]
        parts = []
        for chunk in chunks:
            try:
                parts.append(self._run(chunk))
            except CommandFailed as exc:
                log.warning(
                    "embedding command failed, falling back to hash: %s",
                    exc,
                    extra=fields(reason=exc.reason, texts=len(chunk)),
                )
                self._failed(exc.reason)
                return None
        with self._lock:
            self._failing_in_a_row = 0
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(parts)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": self.runs,
                "ok": self.runs_ok,
                "failures": dict(self.failures),
                "skipped": self.skipped,
                "breaker_open": self._open_until is not None and self.clock.monotonic() < self._open_until,
            }

    def _breaker_open(self) -> bool:
        with self._lock:
            if self._open_until is None:
                return False
            if self.clock.monotonic() < self._open_until:
                self.skipped += 1
                return True
            self._open_until = None  # cooled down: the next run decides
            return False

    def _failed(self, reason: str) -> None:
        with self._lock:
            self.failures[reason] += 1
            self._failing_in_a_row += 1
            limit = self.spec.breaker_failures
            if not limit or self._failing_in_a_row < limit:
                return
            self._failing_in_a_row = 0
            self._open_until = self.clock.monotonic() + self.spec.breaker_cooldown_ms / 1000
        log.error(
            "embedding command failed %d times in a row: hash answers alone for the next %d ms",
            limit,
            self.spec.breaker_cooldown_ms,
        )

    def _run(self, texts: list[str]) -> np.ndarray:
        single = len(texts) == 1
        request: dict[str, Any] = {"text": texts[0]} if single else {"texts": texts}
        request["dim"] = self.dim
        cap = 4096 + len(texts) * (self.dim + 2) * OUTPUT_BYTES_PER_NUMBER
        with self._one_at_a_time:
            with self._lock:
                self.runs += 1
            program = self.spec.argv[0]
            if not os.access(program, os.X_OK) or not os.path.isfile(program):  # said here: bwrap would only exit 1
                raise CommandFailed("spawn", f"cannot start {program!r}: not an executable file")
            try:
                outcome = sandboxed_run(
                    self.spec.argv,
                    policy=self.spec.sandbox,
                    profile="net",
                    network=True,
                    env=COMMAND_ENV,
                    timeout_s=self.spec.timeout_ms / 1000,
                    stdout_max=cap,
                    stderr_max=STDERR_MAX,
                    stdin=json.dumps(request).encode(),
                    rlimits=self.spec.rlimits,
                    ro_paths=self._visible,
                )
            except (OSError, subprocess.SubprocessError, SandboxUnavailable) as exc:  # cannot start at all
                detail = getattr(exc, "strerror", None) or exc
                raise CommandFailed("spawn", f"cannot start {self.spec.argv[0]!r}: {detail}") from None
        vectors = self._parse(outcome, single, len(texts))
        with self._lock:
            self.runs_ok += 1
        log.debug("embedding command ok", extra=fields(texts=len(texts), duration_ms=int(outcome.duration_ms)))
        return vectors

    def _parse(self, outcome: BoundedResult, single: bool, count: int) -> np.ndarray:
        if outcome.timed_out:
            raise CommandFailed("timeout", f"no reply within {self.spec.timeout_ms} ms")
        if outcome.exit_code != 0:
            code = outcome.exit_code
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            last = outcome.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise CommandFailed("exit", how + (f" ({last[0][:200]})" if last[0] else ""))
        if outcome.stdout_truncated:
            raise CommandFailed("garbage", "output longer than any valid reply")
        try:
            reply = json.loads(outcome.stdout)
        except (ValueError, UnicodeDecodeError):
            raise CommandFailed("garbage", "stdout is not JSON") from None
        key = "embedding" if single else "embeddings"
        if not isinstance(reply, dict) or key not in reply:
            raise CommandFailed("garbage", f"stdout is not an object with {key!r}")
        rows = [reply[key]] if single else reply[key]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise CommandFailed("garbage", f"{key!r} is not a list of number lists")
        if len(rows) != count:
            raise CommandFailed("count", f"{len(rows)} vectors for {count} texts")
        for row in rows:
            if len(row) != self.dim:
                raise CommandFailed("dim", f"a vector of {len(row)} numbers, expected MACHINA_GPU_DIM={self.dim}")
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
                raise CommandFailed("garbage", "a vector holds something that is not a number")
            if not all(math.isfinite(x) for x in row):
                raise CommandFailed("nan", "a vector holds NaN or infinity")
        vectors = np.asarray(rows, dtype=np.float64)
        if not np.all(np.any(vectors != 0, axis=1)):
            raise CommandFailed("zero", "a vector is all zeros")
        return normalise_rows(vectors)

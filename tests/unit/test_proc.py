"""The bounded-subprocess runner, with real children: timeouts kill the whole group, caps hold, rlimits apply."""

from __future__ import annotations

import gc
import os
import time
import warnings

import pytest

from machina.proc import Rlimits, run_bounded

ENV = {"PATH": "/usr/bin:/bin"}


def run(argv, **kw):
    kw.setdefault("timeout_s", 10)
    kw.setdefault("stdout_max", 1 << 20)
    kw.setdefault("stderr_max", 1 << 20)
    return run_bounded(argv, env=kw.pop("env", ENV), **kw)


def test_exit_code_stdout_stderr_and_stdin() -> None:
    result = run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"hello")
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, b"hello", b"err\n", False)
    assert not result.ok


def test_the_pipes_are_closed_by_the_runner_not_left_to_the_collector() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run(["sh", "-c", "cat; echo err >&2"], stdin=b"x")
        run(["sleep", "5"], timeout_s=0.2)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_large_stdin_and_stdout_do_not_deadlock() -> None:
    data = os.urandom(3 * 1024 * 1024)
    result = run(["cat"], stdin=data, stdout_max=len(data))
    assert result.stdout == data and result.ok


def test_timeout_kills_the_whole_process_group(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    result = run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout_s=0.5)
    assert result.timed_out and result.exit_code < 0
    assert time.monotonic() - started < 5
    grandchild = int(pidfile.read_text())
    assert not _running(grandchild)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its (re)parent to reap it."""
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.02)
    return True


def test_output_caps_truncate_without_blocking_the_child() -> None:
    result = run(["sh", "-c", "head -c 5000000 /dev/zero; head -c 300 /dev/zero >&2"], stdout_max=10, stderr_max=100)
    assert result.ok
    assert (len(result.stdout), result.stdout_truncated) == (10, True)
    assert (len(result.stderr), result.stderr_truncated) == (100, True)


def test_rlimits_apply_in_the_child() -> None:
    script = "import resource as r; print(r.getrlimit(r.RLIMIT_NOFILE)[0], r.getrlimit(r.RLIMIT_CPU)[0])"
    result = run(["python3", "-c", script], rlimits=Rlimits(nofile=20, cpu_sec=7))
    assert result.stdout.split() == [b"20", b"7"]


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run(["sh", "-c", "while :; do :; done"], rlimits=Rlimits(cpu_sec=1), timeout_s=20)
    assert not result.timed_out and result.exit_code < 0  # SIGXCPU / SIGKILL from the kernel


def test_environment_is_exactly_what_was_given() -> None:
    os.environ["MACHINA_API_TOKEN"] = "must-not-leak"
    try:
        result = run(["env"], env={"PATH": "/usr/bin:/bin", "ONLY": "this"})
    finally:
        del os.environ["MACHINA_API_TOKEN"]
    assert sorted(result.stdout.decode().split()) == ["ONLY=this", "PATH=/usr/bin:/bin"]


def test_missing_program_raises() -> None:
    with pytest.raises(FileNotFoundError):
        run(["/nonexistent/program"])

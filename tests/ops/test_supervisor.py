"""The ``machina up`` supervisor against stand-in children: readiness, restart with backoff, watchdog,
stop with TERM/wait/KILL, and no process left behind (grandchildren in their own sessions included)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from machina.backoff import Backoff
from machina.clock import FakeClock
from machina.up.notifysock import parse_notification
from machina.up.pidfiles import pid_matches, read_pidfile, write_pidfile
from tests.ops.supervised import SupervisedSuite, alive, standin


@pytest.fixture
def suite_factory(tmp_path: Path):
    made: list[SupervisedSuite] = []

    def make(children, **kw) -> SupervisedSuite:
        s = SupervisedSuite(tmp_path, children, **kw)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.close()


def test_children_become_ready_and_leave_pid_files(suite_factory, tmp_path) -> None:
    s = suite_factory([standin("a", wave=0), standin("b", wave=1), standin("c", wave=1)])
    s.wait_ready()
    state = s.state()
    assert {n: c["state"] for n, c in state["components"].items()} == {"a": "running", "b": "running", "c": "running"}
    for name in "abc":
        pid = s.pid_of(name)
        assert pid == state["components"][name]["pid"]
        assert pid_matches(pid, "standin.py")
    assert read_pidfile(str(s.runtime_dir / "machina-up.pid")) == s.proc.pid
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert not list(s.runtime_dir.glob("*.pid"))
    assert not (s.runtime_dir / "machina-up.json").exists()


def test_a_later_wave_starts_only_after_the_earlier_is_ready(suite_factory) -> None:
    s = suite_factory([standin("first", "--never-ready", wave=0, start_timeout=60), standin("second", wave=1)])
    s.wait_for(lambda: s.state()["components"]["first"]["state"] == "starting", what="first starting")
    time.sleep(1.0)
    assert s.state()["components"]["second"]["state"] == "pending"


def test_killed_child_is_restarted_with_a_new_pid(suite_factory) -> None:
    s = suite_factory([standin("a"), standin("b")])
    s.wait_ready()
    old = s.pid_of("a")
    os.kill(old, signal.SIGKILL)
    new = s.wait_for(lambda: (p := s.pid_of("a")) != old and s.state()["components"]["a"]["state"] == "running" and p)
    assert new != old and pid_matches(new, "standin.py")
    info = s.state()["components"]["a"]
    assert info["restarts"] == 1 and info["last_exit"] == "killed by SIGKILL"
    assert s.state()["components"]["b"]["restarts"] == 0
    assert "a killed by SIGKILL; restarting in" in s.stderr()


def test_a_crash_loop_backs_off(suite_factory) -> None:
    s = suite_factory([standin("crashy", "--exit-after", "0.1")], backoff={"first": 0.2, "cap": 1.0})
    s.wait_for(lambda: s.state()["components"]["crashy"]["restarts"] >= 4, timeout=30, what="4 restarts")
    delays = [float(line.rsplit(" ", 1)[1].rstrip("s")) for line in s.stderr().splitlines() if "restarting in" in line]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_leaves_no_process_behind(suite_factory, tmp_path, sig) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    s = suite_factory([standin("parent", "--grandchild", str(grandchild_file)), standin("other")])
    s.wait_ready()
    grandchild = int(grandchild_file.read_text())
    pids = {s.pid_of("parent"), s.pid_of("other"), grandchild}
    assert all(alive(p) for p in pids)
    s.signal(sig)
    assert s.wait_exit() == 0
    assert not [p for p in pids if alive(p)]


def test_crashed_childs_orphans_are_killed_at_stop(suite_factory, tmp_path) -> None:
    """The grandchild of a child that died is reparented to the supervisor (subreaper), not to init."""
    grandchild_file = tmp_path / "grandchild.pid"
    s = suite_factory([standin("parent", "--grandchild", str(grandchild_file))], backoff={"first": 30})
    s.wait_ready()
    grandchild = int(grandchild_file.read_text())
    os.kill(s.pid_of("parent"), signal.SIGKILL)
    s.wait_for(lambda: s.state()["components"]["parent"]["state"] == "backoff")
    assert alive(grandchild)
    with open(f"/proc/{grandchild}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid == s.proc.pid
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert not alive(grandchild)


def test_a_child_ignoring_sigterm_is_killed_after_its_stop_timeout(suite_factory) -> None:
    s = suite_factory([standin("stubborn", "--ignore-term", stop_timeout=1.0)])
    s.wait_ready()
    pid = s.pid_of("stubborn")
    started = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert time.monotonic() - started >= 0.9
    assert not alive(pid)
    assert "stubborn did not stop within 1s: SIGKILL" in s.stderr()


def test_watchdog_restarts_a_hung_child(suite_factory) -> None:
    s = suite_factory([standin("hangs", watchdog_sec=1.0)])
    s.wait_ready()
    pid = s.pid_of("hangs")
    os.kill(pid, signal.SIGSTOP)  # hung: no more WATCHDOG=1
    new = s.wait_for(lambda: (p := s.pid_of("hangs")) != pid and p, timeout=20, what="restart after watchdog")
    assert new != pid
    assert not alive(pid)
    assert "watchdog timeout" in s.stderr()


def test_start_timeout_restarts_a_child_that_never_gets_ready(suite_factory) -> None:
    s = suite_factory([standin("slow", "--never-ready", start_timeout=0.5)])
    s.wait_for(lambda: s.state()["components"]["slow"]["restarts"] >= 1, timeout=20, what="restart")
    assert "not ready after 0.5s" in s.stderr()


def test_configuration_error_stops_everything_with_78(suite_factory) -> None:
    s = suite_factory([standin("ok"), standin("badconf", "--exit-after", "0.3", "--exit-code", "78")])
    assert s.wait_exit() == 78
    assert "badconf exited with status 78 (bad configuration)" in s.stderr()
    assert not [p for p in s.seen_pids if alive(p)]


def test_supervisor_killed_by_sigkill_takes_its_children_along(suite_factory) -> None:
    """PR_SET_PDEATHSIG: children get SIGTERM when the supervisor dies without stopping them."""
    s = suite_factory([standin("a"), standin("b")])
    s.wait_ready()
    pids = [s.pid_of("a"), s.pid_of("b")]
    s.signal(signal.SIGKILL)
    s.wait_exit()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]


# --- pieces --------------------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_and_forgives_a_stable_run() -> None:
    clock = FakeClock()
    b = Backoff(first=0.5, cap=4, stable_after=30)
    assert [b.delay() for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    started = clock.monotonic()
    clock.advance(31)
    b.ran_for(clock.monotonic() - started)
    assert b.delay() == 0.5
    b.ran_for(5)
    assert b.delay() == 1


def test_notification_parsing() -> None:
    assert parse_notification(b"READY=1\nSTATUS=serving x=y\nMAINPID=5") == {
        "READY": "1",
        "STATUS": "serving x=y",
        "MAINPID": "5",
    }
    assert parse_notification(b"garbage\n=1\n") == {}


def test_pid_files_and_pid_reuse_guard(tmp_path) -> None:
    path = str(tmp_path / "x.pid")
    assert read_pidfile(path) is None
    write_pidfile(path, os.getpid())
    assert read_pidfile(path) == os.getpid()
    assert pid_matches(os.getpid(), "python3") or pid_matches(os.getpid(), "python")
    assert not pid_matches(os.getpid(), "machina-worker")  # our pid, but not the executable the file names
    (tmp_path / "bad.pid").write_text("12ab\n")
    assert read_pidfile(str(tmp_path / "bad.pid")) is None
    (tmp_path / "neg.pid").write_text("-5\n")
    assert read_pidfile(str(tmp_path / "neg.pid")) is None

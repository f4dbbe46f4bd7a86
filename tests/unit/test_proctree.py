"""machina.proctree: the one process-tree helper and the one idempotent group kill (D11 of issue 11)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from machina.proctree import child_pids, descendant_pids, kill_group, pid_alive, process_group


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def test_d11_kill_group_never_signals_a_collected_pid() -> None:
    first, bystander = sleeper(), sleeper()
    try:
        kill_group(first)
        assert first.wait(10) == -9
        # The kernel may hand a collected pid to a new process: say it did, to the bystander's group leader.
        first.pid = bystander.pid
        kill_group(first)  # a second kill of the same executor, or one after the reaper ran
        assert bystander.poll() is None, "the bystander was signalled through a reused pid"
    finally:
        bystander.kill()
        bystander.wait()


def test_kill_group_reaches_every_member_of_the_group() -> None:
    script = "sleep 300 & echo $!; wait"
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    assert process_group(member) == leader.pid
    assert member in child_pids(leader.pid)
    kill_group(leader)
    leader.wait(10)
    leader.stdout.close()
    deadline = time.monotonic() + 10  # killed at once; init collects it when it gets to it
    while pid_alive(member):
        assert time.monotonic() < deadline, f"group member {member} survived the group kill"
        time.sleep(0.05)


def test_pid_alive_for_a_running_process_a_zombie_and_a_collected_one() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["sleep", "300"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    deadline = time.monotonic() + 10
    while not _zombie(child.pid):  # killed and not yet collected: a zombie, which counts as gone
        assert time.monotonic() < deadline, "the killed child never became a zombie"
        time.sleep(0.01)
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)  # collected (its pid is free until the kernel hands it out again)


@pytest.mark.parametrize("pid", [0, -1])
def test_pid_alive_never_asks_about_a_process_group(pid: int) -> None:
    assert not pid_alive(pid)  # kill(0, 0) and kill(-1, 0) succeed: they name groups, not a process


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_descendant_pids_reach_below_the_children() -> None:
    # A pooled tool runs as bwrap -> bwrap's init -> the interpreter: CPU figures must reach the last one.
    script = "sh -c 'sleep 300 & echo $!; wait' & wait"
    top = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert top.stdout is not None
        grandchild = int(top.stdout.readline())
        below = descendant_pids(top.pid)
        assert grandchild in below
        assert grandchild not in child_pids(top.pid)
        assert len(below) == 2  # the middle shell and the sleep
        assert descendant_pids(grandchild) == []
    finally:
        kill_group(top)
        top.wait()

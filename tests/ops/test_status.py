"""``machina status``: live probes (pid, socket, GET /health) of a running suite; exit 69 when one is down."""

from __future__ import annotations

import json
import os
import signal

from machina.up import health
from tests.conftest import bin_env, run_bin
from tests.ops.supervised import SupervisedSuite, free_port, standin


def test_status_reports_every_probe_and_exit_69_when_one_is_down(tmp_path, machina_root) -> None:
    run = tmp_path / "run"
    sock = str(run / "toolhost.sock")
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    s = SupervisedSuite(
        tmp_path,
        [
            standin("toolhost", "--socket", sock, probe=["socket", sock]),
            standin("enqueued", "--http", f"127.0.0.1:{port}", probe=["http", url]),
            standin("worker-1"),
        ],
        backoff={"first": 60},
    )
    try:
        s.start().wait_ready()
        env = bin_env(MACHINA_ROOT=str(machina_root), MACHINA_RUNTIME_DIR=str(run))
        result = run_bin("machina", "status", "--json", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["manager"] == "machina up"
        checks = {c["name"]: {ch["what"]: ch["ok"] for ch in c["checks"]} for c in report["components"]}
        assert checks == {
            "enqueued": {"pid": True, "http": True},
            "toolhost": {"pid": True, "socket": True},
            "worker-1": {"pid": True},
        }
        text = run_bin("machina", "status", env=env)
        assert text.returncode == 0 and "ok   toolhost" in text.stdout

        os.kill(s.pid_of("enqueued"), signal.SIGKILL)
        s.wait_for(lambda: s.state()["components"]["enqueued"]["state"] == "backoff")
        down = run_bin("machina", "status", "--json", env=env)
        assert down.returncode == 69
        report = json.loads(down.stdout)
        enq = next(c for c in report["components"] if c["name"] == "enqueued")
        assert report["ok"] is False and enq["ok"] is False and enq["state"] == "backoff" and enq["restarts"] == 1
        assert "DOWN enqueued" in run_bin("machina", "status", env=env).stdout
    finally:
        s.close()


def test_status_with_nothing_running_exits_69(machina_root) -> None:
    result = run_bin("machina", "status", env=bin_env(MACHINA_ROOT=str(machina_root)))
    assert result.returncode == 69
    assert "nothing is running" in result.stdout


def test_a_stale_state_file_is_not_a_running_suite(tmp_path) -> None:
    """A supervisor killed by SIGKILL leaves its files; status must not believe them."""
    (tmp_path / "machina-up.json").write_text(json.dumps({"pid": 999999, "executable": "machina", "components": {}}))
    (tmp_path / "machina-up.pid").write_text("999999\n")
    assert health.read_up_state(str(tmp_path)) is None


def test_probes_fail_cleanly(tmp_path) -> None:
    assert not health.probe_socket(str(tmp_path / "absent.sock")).ok
    assert not health.probe_http(f"http://127.0.0.1:{free_port()}/health", timeout=1).ok
    assert not health.probe_pid(None, "machina-worker").ok


def test_systemd_report_from_systemctl_show() -> None:
    """The systemd side parses `systemctl show` (its real output format, recorded from systemd 252)."""
    listing = "machina-worker@1.service loaded active running Machina worker 1\n"
    show = (
        "Id=machina-toolhost.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=10\n"
        "NRestarts=2\nListen=\n\n"
        "Id=machina-embed.service\nLoadState=loaded\nActiveState=inactive\nSubState=dead\nMainPID=0\n"
        "NRestarts=0\nListen=\n\n"
        "Id=machina-enqueued.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nMainPID=0\n"
        "NRestarts=5\nListen=\n\n"
        "Id=machina-worker@1.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=13\n"
        "NRestarts=0\nListen=\n\n"
        "Id=machina-toolhost.socket\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=0\n"
        "NRestarts=0\nListen=/nonexistent/toolhost.sock (Stream)\n\n"
        "Id=machina-embed.socket\nLoadState=loaded\nActiveState=active\nSubState=listening\nMainPID=0\n"
        "NRestarts=0\nListen=/nonexistent/embed.sock (Stream)\n\n"
        "Id=machina-enqueued.socket\nLoadState=loaded\nActiveState=active\nSubState=listening\nMainPID=0\n"
        "NRestarts=0\nListen=127.0.0.1:1 (Stream)\n"
    )

    def systemctl(args):
        return listing if args[0] == "list-units" else show

    rep = health.systemd_report(systemctl)
    assert rep is not None and rep.manager == "systemd"
    by_name = {c.name: c for c in rep.components}
    assert set(by_name) == {
        "machina-toolhost.service",
        "machina-embed.service",
        "machina-enqueued.service",
        "machina-worker@1.service",
    }
    assert by_name["machina-toolhost.service"].restarts == 2
    assert [c.what for c in by_name["machina-toolhost.service"].checks] == ["unit", "socket"]
    assert by_name["machina-embed.service"].checks[0].ok  # idle behind its listening socket
    assert not by_name["machina-enqueued.service"].checks[0].ok
    assert by_name["machina-enqueued.service"].checks[1].what == "http"
    assert by_name["machina-worker@1.service"].ok
    assert not rep.ok


def test_systemd_report_is_none_when_no_unit_is_installed() -> None:
    show = "Id=machina-toolhost.service\nLoadState=not-found\nActiveState=inactive\n"
    assert health.systemd_report(lambda args: "" if args[0] == "list-units" else show) is None

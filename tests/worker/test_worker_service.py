"""machina-worker as systemd runs it: READY once its children are up, watchdog pings, STOPPING on SIGTERM,
running jobs finished or given back, claims taken over after a kill -9, one live process per id."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from workerkit import ERROR_SCAN, NOOP, NotifySocket, Suite, pid_alive, wait_for

from machina.manifests.tools import builtin_toolpack
from machina.worker.orphans import child_pids


def test_ready_watchdog_and_stopping_on_a_real_notify_socket(suite: Suite, notify: NotifySocket) -> None:
    worker = suite.start_worker(notify=notify, WATCHDOG_USEC="400000")
    ready = notify.wait_for(lambda m: m.startswith("READY=1"))
    assert f"MAINPID={worker.pid}" in ready.splitlines()
    assert any(line.startswith("STATUS=worker 1: ") for line in ready.splitlines())
    notify.wait_for(lambda m: m == "WATCHDOG=1")
    # READY comes once the job children are up: the worker's children include them.
    assert len(child_pids(worker.pid)) >= 2
    name = suite.enqueue(NOOP)
    suite.wait_state(name, "done")
    worker.proc.send_signal(signal.SIGTERM)
    notify.wait_for(lambda m: m.startswith("STOPPING=1"))
    assert worker.proc.wait(20) == 0, worker.text()
    assert "stopped" in worker.text()
    assert "asked to exit ended" not in worker.text()  # idle children exited by themselves, status 0


def test_no_ready_and_no_claim_while_children_cannot_start(suite: Suite, notify: NotifySocket) -> None:
    assert suite.toolhost is not None
    suite.toolhost.terminate()  # removes its socket: a child cannot connect to the toolhost
    suite.toolhost.wait(20)
    assert not suite.toolhost_socket.exists()
    name = suite.enqueue(NOOP)
    worker = suite.start_worker(notify=notify)
    status = notify.wait_for(lambda m: "cannot start a job child" in m)
    assert "machina-toolhost is not running" in status and "retrying in" in status
    assert not any(m.startswith("READY=1") for m in notify.messages)
    job = suite.status(name)
    assert (job.state, job.attempt, job.results) == ("inbox", 1, [])  # no attempt spent
    suite.start_toolhost()
    notify.wait_for(lambda m: m.startswith("READY=1"), timeout=40)
    job = suite.wait_state(name, "done")
    assert [e["attempt"] for e in job.results] == [1]
    assert "job children start again" in worker.text()
    assert worker.stop() == 0


def test_a_worker_killed_mid_job_runs_the_job_again_after_restart(suite: Suite) -> None:
    worker = suite.start_worker(faulty=True)
    name = suite.enqueue(NOOP, fault="slow", fault_s=1.5)
    suite.wait_state(name, "processing")
    children = child_pids(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.proc.wait()
    # The job children die with their worker (PR_SET_PDEATHSIG): none goes on with the job.
    for pid in children:
        wait_for(lambda pid=pid: not pid_alive(pid), 10, f"child {pid} to die with its worker")
    assert suite.status(name).state == "processing"
    restarted = suite.start_worker(faulty=True)
    job = suite.wait_state(name, "done")
    assert [(e["attempt"], e["status"]) for e in job.results] == [(1, "recovered"), (2, "done")]
    assert suite.files("done") == [job.file]
    assert restarted.stop() == 0


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(suite: Suite) -> None:
    worker = suite.start_worker(faulty=True)
    name = suite.enqueue(NOOP, fault="slow", fault_s=1)
    # Once the child has the job, not once it is claimed: a job claimed as SIGTERM comes is given back.
    suite.fault_pids(name, 1)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.text()
    job = suite.status(name)
    assert job.state == "done"
    assert "waiting up to 30.0 s for 1 running job" in worker.text()


def test_sigterm_gives_back_a_job_that_outlasts_the_grace_period(suite: Suite) -> None:
    worker = suite.start_worker(faulty=True, MACHINA_WORKER_STOP_GRACE_MS="300")
    name = suite.enqueue(NOOP, fault="pause")
    (child,) = suite.fault_pids(name, 1)
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0, worker.text()
    assert time.monotonic() - started < 10
    job = suite.status(name)
    assert (job.state, job.attempt, job.results) == ("inbox", 1, [])  # given back, its attempt not spent
    assert not pid_alive(child)


def test_two_workers_on_one_queue_run_each_job_once(suite: Suite) -> None:
    names = [suite.enqueue(dict(NOOP, request_id=f"job-{i}")) for i in range(40)]
    workers = [suite.start_worker("1"), suite.start_worker("2")]
    for name in names:
        suite.wait_state(name, "done")
    for worker in workers:
        assert worker.stop() == 0, worker.text()
    assert len(suite.files("done")) == 40
    envelopes = [suite.results(name) for name in names]
    assert all(len(e) == 1 and e[0]["status"] == "done" for e in envelopes)
    run_ids = {e[0]["result"]["run_id"] for e in envelopes}
    assert len(run_ids) == 40
    assert len(os.listdir(suite.root / "logs")) == 40


def test_one_live_process_per_worker_id(suite: Suite) -> None:
    first = suite.start_worker("7")
    wait_for(lambda: (suite.root / "state" / "claims" / "7.json").exists(), what="worker 7's claim registry")
    wait_for(lambda: len(child_pids(first.pid)) >= 2, what="worker 7's children")
    second = suite.start_worker("7")
    assert second.proc.wait(30) == 75
    assert "held by" in second.text() or "in use" in second.text(), second.text()
    assert first.stop() == 0


def test_children_get_no_secret_but_the_audit_key_over_their_pipe(suite: Suite) -> None:
    secrets = {
        "MACHINA_API_TOKEN": "api-token-0123456789",
        "MACHINA_API_HMAC_SECRET": "hmac-secret-0123456789",
        "TELEGRAM_BOT_TOKEN": "telegram-token-0123456789",
        "MACHINA_AUDIT_KEY": "audit-key-0123456789",
    }
    worker = suite.start_worker(**secrets)
    name = suite.enqueue(ERROR_SCAN)
    job = suite.wait_state(name, "done")
    children = child_pids(worker.pid)
    assert children
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().decode()
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().decode()
        assert "MACHINA_" not in environ and "TELEGRAM_" not in environ
        for value in secrets.values():
            assert value not in environ and value not in cmdline
    # The run log's chain is keyed all the same: the key reached the child over its pipe.
    replay = suite.run_machina(
        "replay", job.results[0]["result"]["log_path"], MACHINA_AUDIT_KEY=secrets["MACHINA_AUDIT_KEY"]
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    unkeyed = suite.run_machina("replay", job.results[0]["result"]["log_path"])
    assert unkeyed.returncode != 0
    assert worker.stop() == 0
    for value in secrets.values():
        assert value not in worker.text()


def test_a_child_is_replaced_after_max_jobs(suite: Suite) -> None:
    worker = suite.start_worker(MACHINA_WORKER_CHILD_MAX_JOBS="2", MACHINA_WORKER_CONCURRENCY="1")
    pids = []
    for i in range(6):
        name = suite.enqueue(dict(NOOP, request_id=f"r{i}"))
        pids.append(suite.wait_state(name, "done").results[0]["result"]["child_pid"])
    assert all(pids.count(pid) <= 2 for pid in pids)
    assert len(set(pids)) >= 3
    assert worker.stop() == 0


def test_per_tool_figures_are_kept_across_restarts(suite: Suite) -> None:
    worker = suite.start_worker()
    for i in range(2):
        suite.wait_state(suite.enqueue(dict(ERROR_SCAN, request_id=f"scan-{i}")), "done")
    assert worker.stop() == 0
    figures = suite.figures()
    assert figures["jobs"] == {"processed": 2, "ok": 2, "fail": 0}
    assert figures["tools"]["AID.ERROR_SCAN.v1"]["ok"] == 2
    assert figures["tools"]["AID.REPORT_SUMMARY.v1"]["ok"] == 2
    worker = suite.start_worker()
    suite.wait_state(suite.enqueue(dict(ERROR_SCAN, request_id="scan-2")), "done")
    suite.wait_state(suite.enqueue({"goal_id": "goal.NO_SUCH.v1"}), "failed")
    assert worker.stop() == 0
    figures = suite.figures()
    assert figures["jobs"] == {"processed": 4, "ok": 3, "fail": 1}
    assert figures["tools"]["AID.ERROR_SCAN.v1"]["ok"] == 3


def test_a_child_checks_a_manifest_schema_edited_since_its_worker_checked_them(suite: Suite) -> None:
    # The worker hands its job children the digests of the schemas it checked at start; a tool manifest
    # broken afterwards is not among them, so a child started since checks it and refuses to start.
    worker = suite.start_worker(MACHINA_WORKER_CHILD_MAX_JOBS="1")
    suite.wait_state(suite.enqueue(NOOP), "done")
    builtin = json.loads(Path(builtin_toolpack()).read_text())
    tool = dict(builtin["tools"][0], aid="AID.TEST.BROKEN_SCHEMA.v1", inputs_schema={"type": 5})
    pack = suite.root / "toolpacks" / "broken" / "manifest.json"
    pack.parent.mkdir(parents=True)
    pack.write_text(json.dumps({"pack": "broken", "version": 1, "tools": [tool]}))
    for _ in range(6):  # more jobs than the children started before the edit (one job each)
        suite.enqueue(NOOP)
    wait_for(lambda: "cannot start a job child" in worker.text(), 60, "a child to refuse the broken manifest")
    assert "AID.TEST.BROKEN_SCHEMA.v1: inputs_schema is not a valid JSON Schema" in worker.text()
    assert worker.stop() == 0

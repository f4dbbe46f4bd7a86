"""The queue's shell tools through /bin/sh: output, --json parsed back, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from queue_shell import env_for, run_shell

from machina.queue import FileQueue, QueueConfig
from machina.queue.wal import encode

CHECKOUT = Path(__file__).resolve().parents[2]
GOAL = '{"goal_id":"goal.CLI.v1"}'


def sh(root: Path, script: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run_shell(script, env_for(root, **env), stdin=stdin)


def test_enqueue_prints_the_name_and_the_job_is_queued(machina_root: Path) -> None:
    proc = sh(machina_root, "machina enqueue", stdin=GOAL)
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip()
    assert name.startswith("p5000_rq_") and (machina_root / "queue" / "inbox" / name).exists()


def test_enqueue_json_output_parses_back(machina_root: Path, tmp_path: Path) -> None:
    request = tmp_path / "job.json"
    request.write_text(GOAL)
    first = sh(machina_root, f"machina enqueue {request} --json --request-id abc --priority 7")
    again = sh(machina_root, f"machina enqueue {request} --json --request-id abc")
    one, two = json.loads(first.stdout), json.loads(again.stdout)
    assert one == {"ok": True, "queued": one["queued"], "request_id": "abc"}
    assert one["queued"].startswith("p0007_") and "_rid" in one["queued"]
    assert two == {**one, "deduplicated": True}


@pytest.mark.parametrize(
    ("script", "stdin", "code", "message"),
    [
        ("machina enqueue", "not json", 65, "invalid request: not JSON"),
        ("machina enqueue", '{"inputs":{}}', 65, "goal_id is required"),
        ("machina enqueue /nonexistent/job.json", None, 66, "no such file"),
        ("machina enqueue --lines --request-id x", GOAL, 64, "--request-id names one request"),
        ("machina enqueue --priority 10000", GOAL, 64, "10000"),
        ("machina queue ls nowhere", None, 64, "nowhere"),
        ("machina queue show p5000_rq_1700000000000_0000000000.json", None, 67, "no such job"),
        ("machina queue retry p5000_rq_1700000000000_0000000000.json", None, 67, "no such job"),
        ("machina queue retry", None, 64, "give NAME or --all-dlq"),
        ("machina queue purge done --older-than soon", None, 64, "not a duration"),
        ("machina queue purge inbox --older-than 1d", None, 64, "inbox"),
    ],
)
def test_errors_are_one_line_and_an_exit_code(
    machina_root: Path, script: str, stdin: str | None, code: int, message: str
) -> None:
    proc = sh(machina_root, script, stdin=stdin)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and proc.stdout == ""
    assert not list((machina_root / "queue" / "inbox").iterdir())


def test_request_over_the_body_limit_is_refused(machina_root: Path) -> None:
    proc = sh(machina_root, "machina enqueue", stdin=GOAL, MACHINA_API_MAX_BODY_BYTES="10")
    assert proc.returncode == 65 and "over MACHINA_API_MAX_BODY_BYTES" in proc.stderr


def test_reused_request_id_with_another_body_is_exit_65(machina_root: Path) -> None:
    assert sh(machina_root, "machina enqueue --request-id r1", stdin=GOAL).returncode == 0
    proc = sh(machina_root, "machina enqueue --request-id r1", stdin='{"goal_id":"goal.OTHER.v1"}')
    assert proc.returncode == 65 and "already used for a different request" in proc.stderr


def test_enqueue_lines_keeps_going_past_a_bad_line(machina_root: Path) -> None:
    proc = sh(machina_root, "machina enqueue --lines --json", stdin=f"{GOAL}\nbroken\n\n{GOAL}\n")
    assert proc.returncode == 65
    assert [json.loads(line)["ok"] for line in proc.stdout.splitlines()] == [True, True]
    assert "line 2: invalid request" in proc.stderr


def test_ls_show_stats_in_a_pipeline(machina_root: Path) -> None:
    sh(machina_root, "machina enqueue --lines", stdin=f"{GOAL}\n{GOAL}\n")
    names = sh(machina_root, "machina queue ls inbox").stdout.split()
    assert len(names) == 2
    listed = [json.loads(line) for line in sh(machina_root, "machina queue ls --json").stdout.splitlines()]
    assert {(j["state"], j["name"], j["attempt"]) for j in listed} == {("inbox", n, 1) for n in names}
    shown = json.loads(sh(machina_root, f"machina queue show {names[0]} --json --request").stdout)
    assert shown["state"] == "inbox" and shown["request"] == {"goal_id": "goal.CLI.v1"}
    human = sh(machina_root, f"machina queue show {names[0]}").stdout
    assert f"name: {names[0]}" in human and "state: inbox" in human
    stats = json.loads(sh(machina_root, "machina queue stats --json").stdout)
    assert stats["sizes"]["inbox"] == 2 and stats["counters"]["enqueued"] == 2
    assert "inbox 2" in sh(machina_root, "machina queue stats").stdout.splitlines()


def test_retry_all_dlq_through_xargs(machina_root: Path) -> None:
    with FileQueue(str(machina_root), QueueConfig(max_attempts=1)) as queue:
        names = {queue.enqueue({"goal_id": "g"}).name for _ in range(2)}
        for _ in names:
            queue.fail(queue.claim("w1"), "broken")
    proc = sh(machina_root, "machina queue ls dlq | xargs -n1 machina queue retry")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(n.replace(".json", ".a2.json") for n in names)
    assert sh(machina_root, "machina queue ls dlq").stdout == ""
    assert sh(machina_root, "machina queue retry --all-dlq").stdout == ""


def test_approve_refuses_clearly_and_leaves_the_job_in_asked(machina_root: Path) -> None:
    call = {"aid": "AID.SHELL.EXEC.v1", "tier": 3, "inputs_digest": "ab" * 32, "status": "asked", "inputs": {}}
    with FileQueue(str(machina_root)) as queue:
        name = queue.enqueue({"goal_id": "g"}).name
        queue.ask(queue.claim("w1"), {"status": "asked", "approvals": [call]})
        bare = queue.enqueue({"goal_id": "g"}).name
        queue.ask(queue.claim("w1"), {"status": "asked"})
    assert sh(machina_root, "machina queue ls asked").stdout.split() == sorted([name, bare])
    shown = sh(machina_root, f"machina queue show {name}").stdout
    assert "asks: AID.SHELL.EXEC.v1 tier 3 (asked) inputs {}" in shown
    down = sh(machina_root, f"machina queue approve {name}")  # no toolhost is running
    assert down.returncode == 69 and "service not running" in down.stderr
    nothing = sh(machina_root, f"machina queue approve {bare}")
    assert nothing.returncode == 65 and "lists no call to approve" in nothing.stderr
    assert sh(machina_root, "machina queue approve p5000_rq_1700000000000_0000000000.json").returncode == 67
    assert sh(machina_root, f"machina queue approve {name} --ttl soon").returncode == 64
    assert sh(machina_root, "machina queue ls asked").stdout.split() == sorted([name, bare])


def test_purge_removes_old_finished_jobs(machina_root: Path) -> None:
    with FileQueue(str(machina_root)) as queue:
        queue.enqueue({"goal_id": "g"})
        queue.complete(queue.claim("w1"))
    assert sh(machina_root, "machina queue purge done --older-than 1h").stdout.strip() == "0"
    assert sh(machina_root, "machina queue purge done --older-than 0s").stdout.strip() == "1"


def test_recover_gives_back_a_dead_workers_claim(machina_root: Path) -> None:
    queue = FileQueue(str(machina_root))
    name = queue.enqueue({"goal_id": "g"}).name
    queue.claim("w3")
    queue.close()  # the worker "died" holding the claim
    proc = sh(machina_root, "machina queue recover")
    assert proc.returncode == 0 and proc.stdout.split() == [name]


def test_recover_refuses_a_running_workers_id(machina_root: Path) -> None:
    code = (
        "import sys,time; from machina.queue import FileQueue; q=FileQueue(sys.argv[1]); q.recover('busy');"
        "print('up', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(machina_root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
        proc = sh(machina_root, "machina queue recover --worker busy")
        assert proc.returncode == 75 and "in use" in proc.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert sh(machina_root, "machina queue recover --worker busy").returncode == 0


def test_checkpoint_and_wal_verify(machina_root: Path) -> None:
    sh(machina_root, "machina enqueue", stdin=GOAL)
    assert sh(machina_root, "machina queue checkpoint").stdout.strip() == "checkpoint written"
    ok = sh(machina_root, "machina wal verify --json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    record = encode({"t": "ENQ", "ts": 1, "name": "x"}, crc=True)
    (machina_root / "queue" / "wal" / "seg_1000000000000_1_abcdef.wal").write_bytes(record + record[:9])
    for script in ("machina wal verify", "machina queue wal verify --json"):
        bad = sh(machina_root, script)
        assert bad.returncode == 1
    assert json.loads(sh(machina_root, "machina wal verify --json").stdout)["ok"] is False
    assert "damaged" in sh(machina_root, "machina wal verify").stdout


def test_checkpoint_with_wal_disabled_says_so(machina_root: Path) -> None:
    proc = sh(machina_root, "machina queue checkpoint", MACHINA_WAL_ENABLE="0")
    assert proc.returncode == 0 and "MACHINA_WAL_ENABLE=0" in proc.stderr


def test_bad_configuration_is_exit_78(machina_root: Path) -> None:
    proc = sh(machina_root, "machina queue stats", MACHINA_WAL_FSYNC="maybe")
    assert proc.returncode == 78 and "MACHINA_WAL_FSYNC" in proc.stderr
    missing = run_shell("machina queue ls", env_for(machina_root / "nope"))
    assert missing.returncode == 78 and "does not exist" in missing.stderr


def test_help_documents_exit_codes() -> None:
    proc = run_shell("machina enqueue --help", env_for(Path("/nonexistent")))
    assert proc.returncode == 0 and "73 queue not writable" in " ".join(proc.stdout.split())

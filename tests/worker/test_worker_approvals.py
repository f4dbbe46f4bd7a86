"""Jobs that need an approval, with a real worker, machina-toolhost and ``machina queue approve``: a tool call
that needs a lease stops the job in asked/ (not done/), and an operator's approval runs it to the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from workerkit import ERROR_SCAN, Suite

from machina.toolhost.leases import inputs_digest


@pytest.fixture
def enforcing(machina_root: Path, tmp_path: Path) -> Iterator[Suite]:
    """The README's production advice: MACHINA_LEASE_ENFORCE=1 (every tier > 0 call needs a lease)."""
    kit = Suite(machina_root, tmp_path, MACHINA_LEASE_ENFORCE="1")
    kit.start_toolhost()
    try:
        yield kit
    finally:
        kit.close()


def test_d8_lease_enforce_parks_a_job_in_asked_and_approve_runs_it(enforcing: Suite) -> None:
    suite = enforcing
    worker = suite.start_worker()
    name = suite.enqueue(ERROR_SCAN)
    job = suite.wait_state(name, "asked")
    (envelope,) = job.results
    result = envelope["result"]
    assert envelope["status"] == "asked" and result["reason"] == "tool_lease_required"
    (asked,) = result["approvals"]
    assert asked["aid"] == "AID.REPORT_SUMMARY.v1" and asked["tier"] == 1 and asked["status"] == "asked"
    assert asked["inputs_digest"] == inputs_digest(asked["aid"], asked["inputs"])

    listed = suite.run_machina("queue", "ls", "asked")
    assert listed.returncode == 0 and listed.stdout.split() == [name]
    shown = suite.run_machina("queue", "show", name)
    assert "asks: AID.REPORT_SUMMARY.v1 tier 1 (asked)" in shown.stdout

    approved = suite.run_machina("queue", "approve", name, "--ttl", "5m")
    assert approved.returncode == 0, approved.stderr
    assert "approved AID.REPORT_SUMMARY.v1 tier 1" in approved.stderr
    job = suite.wait_state(name, "done")
    assert [r["status"] for r in job.results] == ["asked", "done"]
    final = job.results[1]["result"]
    assert final["status"] == "done" and [a["status"] for a in final["approvals"]] == ["spent"]

    # The token never reaches results, run logs or the worker's log; `show --request` shows no token.
    request = json.loads(suite.run_machina("queue", "show", name, "--request", "--json").stdout)["request"]
    assert set(request["_leases"][0]) == {"aid", "inputs_digest"}
    secret = _carried_token(suite, name)  # only the job file itself carries it
    for text in (json.dumps(job.results), worker.text(), *_run_logs(suite)):
        assert secret not in text
    assert worker.stop() == 0


def test_approve_refuses_a_job_that_is_not_asked(enforcing: Suite) -> None:
    name = enforcing.enqueue(ERROR_SCAN)
    refused = enforcing.run_machina("queue", "approve", name)
    assert refused.returncode == 67 and "only jobs in asked/ can be approved" in refused.stderr
    missing = enforcing.run_machina("queue", "approve", "p5000_rq_1700000000000_0000000000.json")
    assert missing.returncode == 67


def _carried_token(suite: Suite, name: str) -> str:
    (path,) = (suite.root / "queue" / "done").glob(name.removesuffix(".json") + ".a*")
    return str(json.loads(path.read_text())["_leases"][0]["token"])


def _run_logs(suite: Suite) -> list[str]:
    return [p.read_text() for p in (suite.root / "logs").rglob("*") if p.is_file()]

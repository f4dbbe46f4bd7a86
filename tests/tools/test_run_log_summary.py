"""AID.RUN.LOG.SUMMARY.v1 through a real toolhost, on run logs written by the real RunLogWriter: a run's own
log and a copy under data/, counts, timings, the keyed chain checked by the toolhost (the key never in a
reply), tampering, a run in progress, and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from machina import toolapi
from machina.audit.chain import Chain
from machina.audit.runlog import LOG_FORMAT, RunLogWriter
from machina.clock import FakeClock
from machina.root import init_root
from machina.testing.toolhost import RunningToolhost, running_toolhost

from .conftest import needs_bwrap

pytestmark = needs_bwrap
AID = "AID.RUN.LOG.SUMMARY.v1"
KEY = "audit-key-for-the-summary-test-0123"


def write_run(root: Path, run_id: str, *, key: str | None = KEY, finish: bool = True) -> RunLogWriter:
    clock = FakeClock(1000.0)
    chain = Chain(key)
    writer = RunLogWriter(
        str(root / "logs" / f"run_{run_id}.jsonl"), run_id=run_id, request_id="rq1", chain=chain, clock=clock
    )
    writer.emit("start", goal_id="goal.X.v1", state_digest="s0", chain_alg=chain.alg, key_id=chain.key_id,
                log_format=LOG_FORMAT)  # fmt: skip
    calls = [("AID.ERROR_SCAN.v1", True, 12.5), ("AID.ERROR_SCAN.v1", False, 3.0), ("AID.REPORT_SUMMARY.v1", True, 4.0)]
    state = "s0"
    for step, (aid, ok, ms) in enumerate(calls, 1):
        clock.advance(1.5)
        after = f"s{step}" if ok else state
        writer.emit("tool", step=step, aid=aid, ok=ok, duration_ms=ms, state_before=state, state_after=after)
        state = after
    if finish:
        clock.advance(1.0)
        writer.emit("done", status="done", reason="goal_complete", steps=3, state_digest=state)
        writer.close()
    return writer


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningToolhost]:
    root = tmp_path_factory.mktemp("runlog") / "root"
    init_root(str(root))
    write_run(root, "r1")
    with running_toolhost(str(root), env={"MACHINA_AUDIT_KEY": KEY}) as running:
        yield running


def own(host: RunningToolhost, run_id: str) -> toolapi.ToolReply:
    """The call a tool of run ``run_id`` makes (the engine names its run in every call)."""
    return host.client.call(AID, {}, run_id=run_id)


def test_a_complete_keyed_run_is_summarised_and_its_chain_holds(host: RunningToolhost) -> None:
    reply = own(host, "r1")
    assert reply.ok, reply
    out = reply.output
    assert (out["run_id"], out["goal_id"], out["events"], out["status"], out["steps"]) == (
        "r1",
        "goal.X.v1",
        5,
        "done",
        3,
    )
    assert out["by_event"] == {"start": 1, "tool": 3, "done": 1}
    assert out["tools"] == {
        "AID.ERROR_SCAN.v1": {"calls": 2, "ok": 1, "failed": 1, "duration_ms": 15.5},
        "AID.REPORT_SUMMARY.v1": {"calls": 1, "ok": 1, "failed": 0, "duration_ms": 4.0},
    }
    assert out["duration_s"] == 5.5 and out["complete"] is True
    assert out["chain"]["ok"] is True and out["chain"]["chain_alg"] == "hmac-sha256" and out["chain"]["problems"] == []
    assert KEY not in json.dumps(reply.to_wire())


def test_a_tampered_log_fails_the_chain_check_but_is_still_summarised(host: RunningToolhost) -> None:
    write_run(Path(host.root), "r2")
    copy = Path(host.root, "data", "copied_run.jsonl")
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(Path(host.root, "logs", "run_r2.jsonl").read_bytes().replace(b'"ok":false', b'"ok":true '))
    reply = host.client.call(AID, {"path": "data/copied_run.jsonl"})
    assert reply.ok and reply.output["chain"]["ok"] is False
    assert "line 3: not in canonical form" in reply.output["chain"]["problems"][0]


def test_a_log_written_with_another_key_is_not_trusted(host: RunningToolhost) -> None:
    write_run(Path(host.root), "r3", key="some-other-key-entirely")
    reply = own(host, "r3")
    assert reply.ok and reply.output["chain"]["ok"] is False
    assert "wrong MACHINA_AUDIT_KEY" in reply.output["chain"]["problems"][0]
    assert KEY not in json.dumps(reply.to_wire()) and "some-other-key-entirely" not in json.dumps(reply.to_wire())


def test_a_run_in_progress_is_summarised_as_far_as_it_got(host: RunningToolhost) -> None:
    writer = write_run(Path(host.root), "r4", finish=False)
    try:
        reply = own(host, "r4")
    finally:
        writer.close()
    out = reply.output
    assert reply.ok and out["complete"] is False and out["status"] is None and out["events"] == 4
    assert out["chain"]["ok"] is True and out["chain"]["in_progress"] is True


@pytest.mark.parametrize(
    ("run_id", "inputs", "status", "message"),
    [
        ("nope", {}, toolapi.TOOL_ERROR, "no such file (the run has no log yet)"),
        (None, {}, toolapi.TOOL_ERROR, "belongs to no run"),
        ("r5", {"path": "state/toolhost/leases.json"}, toolapi.TOOL_ERROR, "belongs to the suite"),
        ("r5", {"path": "/etc/passwd"}, toolapi.TOOL_ERROR, "outside the working root"),
        ("r5", {"run_id": "r1"}, toolapi.INVALID_INPUT, "was unexpected"),
    ],
)
def test_refusals(host: RunningToolhost, run_id: str | None, inputs: dict[str, str], status: str, message: str) -> None:
    reply = host.client.call(AID, inputs, run_id=run_id)
    assert reply.status == status and message in reply.error, reply


def test_another_runs_log_named_by_path_is_refused(host: RunningToolhost) -> None:
    """D3: logs/ holds every run's inputs and outputs; a tool reads only its own run's log, never by path."""
    write_run(Path(host.root), "other")
    reply = host.client.call(AID, {"path": "logs/run_other.jsonl"}, run_id="r1")
    assert reply.status == toolapi.TOOL_ERROR and "logs/" in reply.error, reply
    assert "tools may read only under" in reply.error

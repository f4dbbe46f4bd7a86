"""Goal engine only, in process: runs/s and steps/s of goal.NOOP.v1 and goal.ERROR_SCAN.v1.

Tools are answered in process by a minimal stand-in (the toolhost's cost is measured by its own benchmark,
and the end-to-end worker benchmark comes with machina-worker), so the figures are the engine's own cost:
menu, selection, bindings, schema checks, transactions, digests and the hash-chained run log.  The
baseline, measured in the same run, is the same tool calls made directly, without the engine.

Configurations: run-log fsync off and on (MACHINA_WAL_FSYNC), unkeyed and HMAC-keyed chains, and
BLENDED with the example policy driver (a process per step).  Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_disk import discard

from machina import config
from machina.engine import Engine
from machina.root import Root, init_root
from machina.toolapi import OK, ToolReply

CHECKOUT = Path(__file__).resolve().parent.parent
POLICY = "python3 policies/first_pending.py"
SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))  # per configuration, over all rounds
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))


class InProcessTools:
    """The three tools the benchmarked goals use, answered in process."""

    def __init__(self, root: str) -> None:
        self.root = root

    def call(self, aid: str, inputs: dict[str, Any], **_: Any) -> ToolReply:
        if aid == "AID.ERROR_SCAN.v1":
            with open(os.path.join(self.root, inputs["input_path"]), encoding="utf-8") as handle:
                hits = [line for line in handle if inputs.get("pattern", "ERROR") in line]
            return ToolReply(True, OK, {"matches": len(hits), "rows": hits[:10]})
        if aid == "AID.REPORT_SUMMARY.v1":
            return ToolReply(True, OK, {"summary": f"{inputs['findings']['matches']} matches"})
        return ToolReply(True, OK, {})


def rate_of(action: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``action`` over about ``seconds``."""
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        action()
        count += 1
    return count / elapsed


def best_rates(
    actions: dict[str, Callable[[], Any]],
    after: Callable[[], None],
    seconds: float = SECONDS,
    rounds: int = ROUNDS,
) -> dict[str, float]:
    """The best rate of each action over ``rounds`` rounds, the actions interleaved within each round so
    that the shared machine's noise falls on all of them alike; ``after`` runs after each measurement."""
    for action in actions.values():
        action()  # warm up
    best = dict.fromkeys(actions, 0.0)
    for _ in range(rounds):
        for name, action in actions.items():
            best[name] = max(best[name], rate_of(action, seconds / rounds))
            after()
    return best


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="machina-bench-engine-", dir=os.environ.get("BENCH_DIR"))
    print(f"working root {workdir} (BENCH_DIR picks the file system)")
    try:
        return run(workdir)
    finally:
        discard(workdir)


def run(workdir: str) -> int:
    init_root(workdir)
    shutil.copytree(CHECKOUT / "examples" / "data", os.path.join(workdir, "data"))
    os.makedirs(os.path.join(workdir, "policies"))
    shutil.copy(CHECKOUT / "examples" / "policies" / "first_pending.py", os.path.join(workdir, "policies"))
    tools = InProcessTools(workdir)

    def engine(**env: str) -> Engine:
        env.pop("NOISE", None)
        cfg = config.load(environ={"MACHINA_ROOT": workdir, "MACHINA_ENV_FILE": "/dev/null", **env})
        return Engine.from_config(cfg, Root(workdir), tools)

    noop = {"goal_id": "goal.NOOP.v1"}
    scan = {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log"}}

    def direct_scan() -> None:
        found = tools.call("AID.ERROR_SCAN.v1", {"input_path": "data/app.log"})
        tools.call("AID.REPORT_SUMMARY.v1", {"findings": found.output})

    configs = [
        ("noop", noop, 1, {}),
        ("noop", noop, 1, {"MACHINA_AUDIT_KEY": "bench-key"}),
        ("noop", noop, 1, {"MACHINA_WAL_FSYNC": "1"}),
        ("error scan", scan, 2, {}),
        ("error scan", scan, 2, {"MACHINA_AUDIT_KEY": "bench-key"}),
        ("error scan", scan, 2, {"MACHINA_WAL_FSYNC": "1"}),
        ("error scan", {**scan, "control_mode": "BLENDED"}, 2, {"MACHINA_POLICY_CMD": POLICY}),
        ("noop", noop, 1, {"NOISE": ""}),  # the plain noop again: how far two measurements of one thing differ
    ]
    actions: dict[str, Callable[[], Any]] = {
        "direct noop": lambda: tools.call("AID.NOOP.v1", {}),
        "direct error scan": direct_scan,
    }
    for name, request, _steps, env in configs:
        label = f"engine, {name}" + "".join(f", {_short(k)}" for k in env)
        eng = engine(**env)
        actions[label] = lambda eng=eng, request=request: eng.run(request)
    rates = best_rates(actions, after=lambda: _empty(os.path.join(workdir, "logs")))
    print(f"{'configuration':46} {'runs/s':>8} {'steps/s':>8} {'us/run':>8} {'engine us/step':>15} {'vs plain':>9}")
    for name, _request, steps, env in configs:
        label = f"engine, {name}" + "".join(f", {_short(k)}" for k in env)
        rate, plain = rates[label], rates[f"engine, {name}"]
        per_step = (1e6 / rate - 1e6 / rates[f"direct {name}"]) / steps
        print(f"{label:46} {rate:8.0f} {rate * steps:8.0f} {1e6 / rate:8.0f} {per_step:15.0f} {rate / plain:9.3f}")
    print(
        "\nengine us/step: time per step beyond the tool calls themselves (measured directly in the same run);"
        "\nvs plain: runs/s relative to the same goal with the default settings (no fsync, no key, no policy);"
        "\nthe noise control measures the plain noop twice: ratios closer to 1 than it are within the noise."
    )
    return 0


def _empty(directory: str) -> None:
    """A fresh, empty ``directory`` (the run logs of a measurement); under make bench the old one goes to the
    trash instead of being deleted (bench_disk.discard)."""
    mode = os.stat(directory).st_mode & 0o7777
    discard(directory)
    os.mkdir(directory, mode)


def _short(variable: str) -> str:
    return {
        "MACHINA_WAL_FSYNC": "fsync",
        "MACHINA_AUDIT_KEY": "hmac key",
        "MACHINA_POLICY_CMD": "BLENDED policy",
        "NOISE": "again (noise control)",
    }[variable]


if __name__ == "__main__":
    sys.exit(main())

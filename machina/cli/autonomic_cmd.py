"""``machina autonomic status|run|gate``: the self-improvement engine, for operators and tests."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from machina.autonomic.engine import BUILT_LEVELS
from machina.autonomic.gate import run_gate
from machina.autonomic.service import build_engine
from machina.autonomic.state import load_state, save_state
from machina.autonomic.timings import ACTION_NAMES, LEVEL_NAMES, LEVELS, RUNNABLE, timings_for
from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.clock import SYSTEM_CLOCK
from machina.exitcodes import ExitCode
from machina.root import open_root
from machina.up.pidfiles import pid_matches, pidfile_path, read_pidfile


@click.group()
def autonomic() -> None:
    """The self-improvement engine (machina-autonomic): its state, one level now, the regression gate."""


@autonomic.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@root_option
def status(as_json: bool, root: str | None) -> int:
    """Whether the daemon runs, its timings, and when each level last ran with what outcome."""
    cfg = bootstrap("machina autonomic status", overrides_from(root))
    machina_root = open_root(cfg)
    state = load_state(machina_root.state)
    pid = read_pidfile(pidfile_path(machina_root.runtime_dir, "autonomic"))
    running = pid is not None and pid_matches(pid, "machina-autonomic")
    timings = timings_for(cfg["MACHINA_DEV_EXPLORE"])
    levels: dict[str, dict[str, Any]] = {
        level: {
            "name": LEVEL_NAMES[level],
            "built": level in BUILT_LEVELS,  # every level is built; whether it can run depends on its means
            "interval_s": timings.interval_s[level],
            "last_run": state.level(level).last_run or None,
            "runs": state.level(level).runs,
            "last_outcome": state.level(level).last_outcome,
        }
        for level in LEVELS
    }
    doc = {
        "running": running,
        "pid": pid if running else None,
        "mode": timings.mode,
        "heartbeats": state.heartbeats,
        "rollbacks": state.rollbacks,
        "alerts": state.alerts,
        "burst": {"active": state.burst_active, "count": state.bursts, "exits": state.burst_exits},
        "probes_pending": len(state.pending_probes),
        "levels": levels,
    }
    if as_json:
        echo_json(doc)
        return ExitCode.OK
    click.echo(f"machina-autonomic: {'running, pid ' + str(pid) if running else 'not running'}; {timings.mode} timings")
    for level, row in levels.items():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["last_run"])) if row["last_run"] else "never"
        click.echo(f"{level} {row['name']:<10} every {row['interval_s']:>6.0f} s  last {when}  {row['last_outcome']}")
    if state.burst_active:
        click.echo(f"burst: running since {time.strftime('%H:%M:%S', time.gmtime(state.burst_started_at))}")
    return ExitCode.OK


@autonomic.command()
@click.argument("level", type=click.Choice(RUNNABLE, case_sensitive=False))
@root_option
def run(level: str, root: str | None) -> int:
    """Run LEVEL once now, whatever its timer says (the daemon's state records it).

    LEVEL is L1 to L6, or SQ (a self-question), RS (a random stimulus) or EV (self-evolution, only
    with MACHINA_SELF_EVOLVE=1).

    Exit status: 0 the level ran and found nothing wrong, 1 it ran and found a problem (a reward
    regression, a failure), 69 the level cannot run here (it needs the toolhost, a model or the queue),
    78 bad configuration.
    """
    cfg = bootstrap("machina autonomic run", overrides_from(root))
    engine = build_engine(cfg)
    outcome = engine.run_level(level.upper())
    save_state(engine.state_dir, engine.state)
    name = LEVEL_NAMES.get(outcome.level) or ACTION_NAMES[outcome.level]
    click.echo(f"{outcome.level} {name}: {outcome.summary}")
    return ExitCode.OK if outcome.ok else ExitCode.FAILURE


@autonomic.command()
@root_option
def gate(root: str | None) -> int:
    """Run the regression gate now on a scratch copy of the root (MACHINA_REGRESSION_CMD).

    Keeps nothing but a higher baseline. Exit status: 0 accepted (pass count at least the baseline in
    memory/regression_baseline.json), 1 rejected (no command, a timeout, no pass count in the output,
    fewer passes), 78 bad configuration.
    """
    cfg = bootstrap("machina autonomic gate", overrides_from(root))
    machina_root = open_root(cfg)
    argv = cfg["MACHINA_REGRESSION_CMD"] or ()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    result = run_gate(machina_root.path, argv, cfg["MACHINA_REGRESSION_TIMEOUT_S"], SYSTEM_CLOCK, base_env=env)
    click.echo(f"{'accepted' if result.accepted else 'rejected'}: {result.reason}")
    return ExitCode.OK if result.accepted else ExitCode.FAILURE

"""``machina-autonomic``: parse, configure, run (the engine is machina.autonomic.engine)."""

from __future__ import annotations

from typing import NoReturn

import click

from machina.autonomic.service import AutonomicService
from machina.cli.common import bootstrap, overrides_from, root_option, run_main
from machina.service import run_service


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@root_option
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(root: str | None, verbose: bool) -> int:
    """Run the self-improvement levels when they are due, under gates that fail closed.

    L1 Reflect (tool statistics -> insights), L2 Test (probe jobs through the queue), L3 Heal and L5
    Curiosity (the model proposes a call, the toolhost runs it, a success becomes a skill), L4 Hygiene
    (reward rollback, trust pruning, log caps), L6 Web (search -> knowledge), self-questions and burst mode.
    Without a configured model (MACHINA_CHAT_BACKEND and its model) L3, L5 and self-questions do not run.
    State is kept in $MACHINA_ROOT/state/autonomic_state.json (saved on every heartbeat and on SIGTERM or
    SIGINT), the pid in $MACHINA_RUNTIME_DIR/autonomic.pid, what each level did in
    memory/autonomic_audit.jsonl. Refuses to start (exit 78) with MACHINA_AUTONOMIC_APPROVE_ALL_ASK=1
    under MACHINA_PROFILE=prod.
    """
    cfg = bootstrap("machina-autonomic", overrides_from(root), verbose, daemon=True)
    return int(run_service(AutonomicService(cfg)))


def main() -> NoReturn:
    run_main(cli, "machina-autonomic")

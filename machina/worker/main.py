"""``machina-worker``: parse the command line, configure, run the worker (machina.worker.service)."""

from __future__ import annotations

from typing import NoReturn

import click

from machina.cli.common import bootstrap, overrides_from, root_option, run_main
from machina.queue.claims import WORKER_ID_RE


def _worker_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not WORKER_ID_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r}: expected 1 to 64 of A-Z a-z 0-9 _ . @ : -")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--id",
    "worker_id",
    required=True,
    metavar="ID",
    callback=_worker_id,
    help="Worker id (the N of machina-worker@N.service): names its claims and figures; one live process per id.",
)
@root_option
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(worker_id: str, root: str | None, verbose: bool) -> int:
    """Claim jobs from the queue under MACHINA_ROOT and run each through the goal engine.

    Each job runs in a job child: a pre-started process with a cleared environment, in its own process
    group, so that a job that crashes, runs out of memory or hangs cannot take the worker down. A job
    whose child dies, or that runs past MACHINA_JOB_TIMEOUT_MS (its child's process group is killed), is
    failed as retryable: the queue retries it and dead-letters it when its attempts are spent.
    MACHINA_WORKER_CONCURRENCY jobs run at once (one child each, plus a spare child); a child is
    replaced after MACHINA_WORKER_CHILD_MAX_JOBS jobs. Tools run in machina-toolhost.

    At start the worker takes over its id (jobs its previous process held go back to the queue),
    starts its children and then tells systemd READY=1 (Type=notify); it pings the watchdog while its
    loops make progress. On SIGTERM or SIGINT it stops claiming, lets running jobs finish for
    MACHINA_WORKER_STOP_GRACE_MS, gives back those that do not (without spending an attempt), and
    exits 0.

    Exit status: 0 after a clean stop, 75 when a live process holds the worker id, 78 for a bad
    configuration or broken manifests.
    """
    from machina.worker.service import WorkerService

    cfg = bootstrap("machina-worker", overrides_from(root), verbose=verbose, daemon=True)
    return int(WorkerService(cfg, worker_id).run())


def main() -> NoReturn:
    run_main(cli, "machina-worker")

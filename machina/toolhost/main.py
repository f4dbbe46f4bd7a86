"""``machina-toolhost``: parse the command line, configure, run the service (machina.toolhost.service)."""

from __future__ import annotations

from typing import NoReturn

import click

from machina.cli.common import bootstrap, overrides_from, root_option, run_main
from machina.service import run_service


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@root_option
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Listen on PATH (default: toolhost.sock in MACHINA_RUNTIME_DIR, $RUNTIME_DIRECTORY or $MACHINA_ROOT/run).",
)
@click.option("--bwrap", metavar="PATH", help="bubblewrap executable to use (default: bwrap found on PATH).")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(root: str | None, socket_path: str | None, bwrap: str | None, verbose: bool) -> int:
    """Run tools for the Machina suite: the one place tools execute.

    Serves newline-delimited JSON on a Unix socket (systemd socket activation accepted). Each peer is
    identified by SO_PEERCRED: its own uid, root and MACHINA_TOOLHOST_ALLOWED_UIDS may call tools; only root
    and MACHINA_TOOLHOST_ADMIN_UIDS may issue leases. Every call is checked against the tool's manifest,
    the permission mode and leases, then runs in a sandbox: bubblewrap namespaces, seccomp-BPF, rlimits,
    a cleared environment, an unprivileged uid. See machina-toolhost(8) for the protocol.

    Exit status: 0 after a clean stop, 69 when the sandbox is required but unavailable, 73 when the
    socket is in use or the runtime directory is read-only or full, 78 for a bad configuration.
    """
    from machina.toolhost.service import Toolhost

    cfg = bootstrap("machina-toolhost", overrides_from(root), verbose=verbose, daemon=True)
    return int(run_service(Toolhost(cfg, socket_path=socket_path, bwrap=bwrap)))


def main() -> NoReturn:
    run_main(cli, "machina-toolhost")

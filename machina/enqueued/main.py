"""``machina-enqueued``: parse the command line, load the configuration, hand over to the service."""

from __future__ import annotations

from typing import NoReturn

import click

from machina.cli.common import bootstrap, overrides_from, root_option, run_main

HELP = """Serve the Machina HTTP API: accept jobs into the queue under MACHINA_ROOT.

\b
Endpoints: POST /enqueue, GET /health, GET /stats, GET /metrics, GET /jobs/<name>.
Listens on systemd's sockets when socket-activated (LISTEN_FDS), else on --socket,
else on --host and --port.  Every endpoint but /health needs MACHINA_API_TOKEN
(Authorization: Bearer) and/or MACHINA_API_HMAC_SECRET (X-Machina-Signature);
with neither set they answer 403.  A job is answered "queued" only once it is
durable (MACHINA_WAL_FSYNC).  SIGTERM stops accepting, finishes requests in
flight and exits 0.  Configuration: MACHINA_API_* (see machina-enqueued(8)).
"""


@click.command(help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", metavar="ADDR", help="Address to listen on (MACHINA_API_HOST, default 127.0.0.1).")
@click.option("--port", metavar="PORT", help="TCP port (MACHINA_API_PORT, default 8080).")
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Listen on this Unix socket instead of host and port (MACHINA_API_SOCKET).",
)
@root_option
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level (one line per request).")
def cli(host: str | None, port: str | None, socket_path: str | None, root: str | None, verbose: bool) -> int:
    from machina.enqueued.server import EnqueueService
    from machina.enqueued.settings import ServerSettings
    from machina.service import run_service

    overrides = overrides_from(root, MACHINA_API_HOST=host, MACHINA_API_PORT=port, MACHINA_API_SOCKET=socket_path)
    cfg = bootstrap("machina-enqueued", overrides, verbose, daemon=True)
    return int(run_service(EnqueueService(cfg, ServerSettings.from_config(cfg))))


def main() -> NoReturn:
    run_main(cli, "machina-enqueued")

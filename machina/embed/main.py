"""``machina-embed``: parse, configure, serve (the service itself is machina.embed.service)."""

from __future__ import annotations

import contextlib
from typing import NoReturn

import click

from machina.cli.common import bootstrap, overrides_from, root_option, run_main
from machina.config import Config
from machina.embed.service import EmbedService
from machina.embed.wiring import build_engine
from machina.exitcodes import ExitCode, MachinaError
from machina.ipc.activation import listen_sockets
from machina.ipc.jsonlines import ServerLimits
from machina.owned import creating
from machina.root import open_root
from machina.sandbox import etcview
from machina.service import run_service


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@root_option
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Listen on PATH instead of $MACHINA_RUNTIME_DIR/embed.sock (ignored when socket-activated).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
def cli(root: str | None, socket_path: str | None, verbose: bool) -> int:
    """Serve text embeddings and similarity-based tool selection on a Unix socket.

    Requests are JSON lines (ops: ping, embed, select, success, stats; see machina-embed(8)). Vectors
    come from MACHINA_EMBED_PROVIDER: hash (built in) or cmd (MACHINA_EMBED_CMD, falling back to hash
    on any failure). Tool centroids learn from recorded successes, kept in $MACHINA_ROOT/state/.
    Uses cupy when it is installed and a GPU answers, numpy otherwise.

    Accepts a socket from systemd (LISTEN_FDS); otherwise binds $MACHINA_RUNTIME_DIR/embed.sock
    (default $MACHINA_ROOT/run/embed.sock) with mode 0660. Stops cleanly on SIGTERM or SIGINT.
    """
    cfg = bootstrap("machina-embed", overrides_from(root), verbose, daemon=True)
    # The embedding command's sandbox binds an /etc copy: beside our socket, gone at every stop.
    with contextlib.ExitStack() as stack:
        with creating():  # run/ read-only or full: one line naming it, exit 73
            stack.enter_context(etcview.installed_under(open_root(cfg).runtime_dir))
        return _serve(cfg, socket_path)


def _serve(cfg: Config, socket_path: str | None) -> int:
    with creating():  # state/ read-only or full: one line naming it, exit 73
        engine = build_engine(cfg)
    activated = listen_sockets()
    if len(activated) > 1:
        raise MachinaError(f"systemd passed {len(activated)} sockets; machina-embed takes one", ExitCode.CONFIG)
    path = socket_path or open_root(cfg).socket_path("embed")
    allowed = [int(uid) for uid in cfg["MACHINA_EMBED_ALLOWED_UIDS"]]
    service = EmbedService(
        engine,
        path,
        listener=activated[0] if activated else None,
        allowed_uids=allowed,
        limits=ServerLimits.from_config(cfg),
    )
    return int(run_service(service))


def main() -> NoReturn:
    run_main(cli, "machina-embed")

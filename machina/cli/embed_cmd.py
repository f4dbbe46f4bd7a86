"""``machina embed TEXT...`` and ``machina select --goal TEXT --menu FILE``: ask machina-embed from a shell."""

from __future__ import annotations

import json
import os
from typing import IO, Any

import click

from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.config import Config
from machina.exitcodes import ExitCode, MachinaError

_local_option = click.option(
    "--local",
    is_flag=True,
    help="Compute in this process with the configured provider instead of asking the running service.",
)
_socket_option = click.option(
    "--socket", "socket_path", metavar="PATH", help="The service's socket (default: the root's run/embed.sock)."
)
_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the service's reply.",
)


class _Local:
    """The engine in process, answering like the service."""

    def __init__(self, cfg: Config) -> None:
        from machina.embed.service import EmbedService
        from machina.embed.wiring import build_engine

        self._service = EmbedService(build_engine(cfg), socket_path="")

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        from machina.embed.client import EmbedError
        from machina.ipc.peercred import PeerCred

        reply = self._service.handle(request, PeerCred(os.getpid(), os.getuid(), os.getgid()))
        if not reply.pop("ok"):
            raise EmbedError(reply["status"], reply["error"])
        return reply


def _backend(cfg: Config, local: bool, socket_path: str | None, timeout: float) -> Any:
    if local:
        return _Local(cfg)
    from machina.embed.client import EmbedClient
    from machina.root import open_root

    return EmbedClient(socket_path or open_root(cfg).socket_path("embed"), timeout=timeout)


@click.command("embed")
@click.argument("texts", nargs=-1, required=True, metavar="TEXT...")
@_local_option
@_socket_option
@_timeout_option
@root_option
def embed(texts: tuple[str, ...], local: bool, socket_path: str | None, timeout: float, root: str | None) -> None:
    """Print the embedding of each TEXT as one JSON line.

    Each line: {"dim": N, "embedding": [...], "fallback": BOOL, "provider": "hash"|"cmd", "text": TEXT}.
    Vectors have MACHINA_GPU_DIM numbers and unit length. Exit 69 when the service is not running
    (use --local to compute without it).
    """
    cfg = bootstrap("machina", overrides_from(root))
    reply = _backend(cfg, local, socket_path, timeout).call({"op": "embed", "texts": list(texts)})
    for text, vector in zip(texts, reply["embeddings"], strict=True):
        echo_json(
            {
                "text": text,
                "dim": reply["dim"],
                "provider": reply["provider"],
                "fallback": reply["fallback"],
                "embedding": vector,
            }
        )


@click.command("select")
@click.option("--goal", required=True, metavar="TEXT", help="The goal text to find a tool for.")
@click.option(
    "--menu",
    "menu_file",
    required=True,
    type=click.File("r"),
    metavar="FILE",
    help="JSON menu: a list of {sid, aid, name, tags, description}, or a toolpack manifest ('-' = stdin).",
)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="How many picks to rank.")
@_local_option
@_socket_option
@_timeout_option
@root_option
def select(
    goal: str,
    menu_file: IO[str],
    top_k: int,
    local: bool,
    socket_path: str | None,
    timeout: float,
    root: str | None,
) -> int:
    """Rank the tools of a menu for a goal by centroid similarity (the GPU_CENTROID selector).

    Prints one JSON object: picks (best first, ties in menu order), scores by sid, below_floor, floor,
    provider. Items without a sid get SID0001, SID0002, ... in file order. Exit 0 with a pick at or
    above MACHINA_EMBED_MIN_SCORE, 1 when the best is below it, 65 for a bad menu, 69 when the service
    is not running (use --local to compute without it).
    """
    cfg = bootstrap("machina", overrides_from(root))
    menu = read_menu(menu_file)
    reply = _backend(cfg, local, socket_path, timeout).call(
        {"op": "select", "goal": goal, "menu": menu, "top_k": top_k}
    )
    echo_json(reply)
    return int(ExitCode.FAILURE if reply["below_floor"] else ExitCode.OK)


def read_menu(handle: IO[str]) -> list[dict[str, Any]]:
    """A menu from a JSON list of items or from a toolpack manifest's ``tools``; missing sids numbered."""
    name = getattr(handle, "name", "menu")
    try:
        doc = json.load(handle)
    except ValueError as exc:
        raise MachinaError(f"{name}: not JSON: {exc}", ExitCode.DATAERR) from None
    items = doc.get("tools") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise MachinaError(
            f"{name}: expected a list of menu items or a toolpack manifest with 'tools'", ExitCode.DATAERR
        )
    menu = []
    for position, item in enumerate(items, start=1):
        entry = {key: item[key] for key in ("sid", "aid", "name", "tags", "description") if key in item}
        entry.setdefault("sid", f"SID{position:04d}")
        menu.append(entry)
    return menu

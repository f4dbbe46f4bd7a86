"""``machina memory query|stats|reindex``: search the memory streams, count them, check them.

``query`` syncs the search index (state/memory/index.sqlite3) with the streams first, so it always sees
every complete line; ``stats`` and ``reindex --verify`` only read.
"""

from __future__ import annotations

import json
import os

import click

from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.exitcodes import ExitCode
from machina.memory.graph import graph_status
from machina.memory.index import DEFAULT_HALF_LIFE_DAYS, MemoryIndex
from machina.memory.streams import check_name, stream_names, stream_path
from machina.ops.memory import reindex
from machina.root import Root


def _root(root: str | None, program: str) -> Root:
    cfg = bootstrap(program, overrides_from(root))
    cfg.require_root()
    return Root(cfg["MACHINA_ROOT"], cfg["MACHINA_RUNTIME_DIR"])


@click.group()
def memory() -> None:
    """The memory streams under MACHINA_ROOT/memory/ and their search index."""


@memory.command()
@click.argument("text")
@click.option("--stream", "streams", multiple=True, metavar="NAME", help="Only this stream (repeatable).")
@click.option("--top-k", type=click.IntRange(1, 100), default=5, show_default=True, help="How many results.")
@click.option(
    "--half-life-days",
    type=click.FloatRange(min=0.01),
    default=DEFAULT_HALF_LIFE_DAYS,
    show_default=True,
    help="Recency weighting: an entry this old counts half as recent as a new one.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result.")
@root_option
def query(
    text: str, streams: tuple[str, ...], top_k: int, half_life_days: float, as_json: bool, root: str | None
) -> int:
    """Search the streams for TEXT (BM25 full-text score and recency, diversified by MMR).

    Exit status: 0 results found, 1 none, 65 a bad stream name, 78 MACHINA_ROOT missing.
    """
    machina_root = _root(root, "machina memory query")
    for name in streams:
        check_name(name)
    with MemoryIndex(machina_root.memory, machina_root.state) as index:
        index.sync()
        hits = index.query(text, streams=streams, top_k=top_k, half_life_days=half_life_days)
    for hit in hits:
        if as_json:
            echo_json({"stream": hit.stream, "offset": hit.offset, "score": hit.score, "entry": json.loads(hit.line)})
        else:
            click.echo(f"{hit.score:.3f}  {hit.stream}@{hit.offset}  {hit.text[:200]}")
    return ExitCode.OK if hits else ExitCode.FAILURE


@memory.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@root_option
def stats(as_json: bool, root: str | None) -> int:
    """Per stream: size on disk, and the indexed entries with their oldest and newest time."""
    machina_root = _root(root, "machina memory stats")
    indexed = {}
    if os.path.exists(os.path.join(machina_root.state, "memory", "index.sqlite3")):
        with MemoryIndex(machina_root.memory, machina_root.state, readonly=True) as index:
            indexed = index.stats()
    table = {
        name: {"bytes": os.path.getsize(stream_path(machina_root.memory, name)), **indexed.get(name, {})}
        for name in stream_names(machina_root.memory)
    }
    if as_json:
        echo_json({"streams": table})
        return ExitCode.OK
    if not table:
        click.echo(f"no memory streams in {machina_root.memory}")
    for name, row in table.items():
        entries = row.get("entries")
        click.echo(f"{name:<32} {row['bytes']:>12} bytes  {entries if entries is not None else '-':>8} indexed")
    return ExitCode.OK


@memory.command("graph")
@click.argument("entity", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@root_option
def graph_cmd(entity: str | None, as_json: bool, root: str | None) -> int:
    """Graph memory: entity and relation counts and the most mentioned entities, or ENTITY's neighbours.

    Exit status: 0 shown, 1 ENTITY is not known, 78 MACHINA_ROOT missing.
    """
    machina_root = _root(root, "machina memory graph")
    status = graph_status(machina_root.memory, entity)
    if as_json:
        echo_json(status)
    elif entity is None:
        click.echo(
            f"{status['entities']} entities, {status['relations']} relations "
            f"({status['faded_relations']} faded below the threshold)"
        )
        for top in status["top"]:
            click.echo(f"  {top['mentions']:>6}  {top['name']} ({top['type']})")
    else:
        for match in status["matches"]:
            click.echo(f"{match['name']} ({match['type']})")
            for n in match["neighbours"]:
                arrow = "->" if n["direction"] == "out" else "<-"
                click.echo(f"  {arrow} {n['predicate']} {n['entity']}  (strength {n['strength']})")
    if entity is not None and not status["matches"]:
        if not as_json:
            click.echo(f"no entity named {entity!r}", err=True)
        return ExitCode.FAILURE
    return ExitCode.OK


memory.add_command(reindex)

"""``machina init``: create a working root."""

from __future__ import annotations

import os

import click

from machina.cli.common import bootstrap
from machina.root import init_root


@click.command()
@click.argument("root", required=False, type=click.Path(file_okay=False))
def init(root: str | None) -> None:
    """Create the MACHINA_ROOT layout (queue, logs, memory, packs, plugins, run, state) in ROOT.

    ROOT defaults to $MACHINA_ROOT. Directories are created private (0700). Running it again on an
    existing root only adds what is missing.
    """
    cfg = bootstrap("machina")
    target = root or cfg["MACHINA_ROOT"]
    if not target:
        raise click.UsageError("give ROOT or set MACHINA_ROOT")
    target = os.path.abspath(target)
    created = init_root(target)
    for rel in created:
        click.echo(f"created {os.path.normpath(os.path.join(target, rel))}")
    click.echo(f"root ready: {target}")

"""``machina``: the operator's command line.  Subcommands live in their own modules, loaded on demand.

Loading on demand keeps ``machina queue ls`` from importing numpy, the HTTP server or the sandbox.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NoReturn

import click

from machina import __version__
from machina.cli.common import run_main

# command name -> "module:attribute".  Each module owns its command group.
COMMANDS: dict[str, str] = {
    "init": "machina.cli.init_cmd:init",
    "config": "machina.cli.config_cmd:config",
    "enqueue": "machina.cli.queue_cmd:enqueue",
    "queue": "machina.cli.queue_cmd:queue",
    "wal": "machina.cli.queue_cmd:wal",
    "run": "machina.cli.engine_cmd:run",
    "replay": "machina.cli.engine_cmd:replay",
    "audit": "machina.cli.engine_cmd:audit",
    "cts": "machina.cli.engine_cmd:cts",
    "tool": "machina.cli.tool_cmd:tool",
    "lease": "machina.cli.tool_cmd:lease",
    "plugin": "machina.cli.tool_cmd:plugin",
    "mcp": "machina.cli.mcp_cmd:mcp",
    "embed": "machina.cli.embed_cmd:embed",
    "memory": "machina.cli.memory_cmd:memory",
    "autonomic": "machina.cli.autonomic_cmd:autonomic",
    "chat": "machina.cli.chat_cmd:chat",
    "select": "machina.cli.embed_cmd:select",
    "up": "machina.cli.up_cmd:up",
    "serve": "machina.cli.up_cmd:serve",
    "status": "machina.cli.up_cmd:status",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used (click's documented lazy pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # that part of the suite is not installed in this build
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    @staticmethod
    def _available(name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="machina")
def cli() -> None:
    """Machina: a hardened agent and job runtime.

    Jobs go into a durable queue under MACHINA_ROOT (over HTTP with machina-enqueued, or with
    `machina enqueue`), workers run them through sandboxed tools, and every run leaves a hash-chained
    audit log. Configuration comes from MACHINA_* variables; `machina config show` prints it.

    Exit codes follow sysexits(3): 0 ok, 1 problems found, 64 usage, 65 bad data, 66 no input,
    69 service unavailable, 73 cannot write, 75 try again, 77 permission denied, 78 bad configuration.
    """


def main() -> NoReturn:
    run_main(cli, "machina")

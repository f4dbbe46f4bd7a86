"""What every Machina command line shares: configuration bootstrap, exit codes, JSON output.

Each executable's ``main`` is ``run_main(cli, "prog")``: click parses, the command configures through
:func:`bootstrap`, and errors become one line on stderr with a sysexits code (see machina.exitcodes).
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import click

from machina import config, log
from machina.exitcodes import ExitCode, MachinaError

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("machina")


def bootstrap(
    program: str, overrides: Mapping[str, str] | None = None, verbose: bool = False, *, daemon: bool = False
) -> config.Config:
    """Load and validate the configuration, then set up logging with its secrets redacted.

    A ``daemon`` then hardens itself (:func:`machina.hardening.harden_daemon`): not dumpable, and the
    secrets out of its environment.
    """
    cfg = config.load(overrides={k: v for k, v in (overrides or {}).items() if v})
    level = "debug" if verbose else cfg["MACHINA_LOG_LEVEL"]
    log.setup(program, level, cfg.secret_values())
    for name in cfg.unknown_variables:
        logger.warning("unknown configuration variable %s (typo?) is ignored", name)
    if daemon:
        from machina.hardening import harden_daemon

        harden_daemon(cfg)
    return cfg


def root_option(func: F) -> F:
    """``--root DIR``: the working root for this command (overrides MACHINA_ROOT)."""
    return click.option(
        "--root",
        "root",
        metavar="DIR",
        envvar=None,
        default=None,
        help="Working root (overrides MACHINA_ROOT).",
    )(func)


def overrides_from(root: str | None = None, **extra: str | None) -> dict[str, str]:
    result = {"MACHINA_ROOT": os.path.abspath(root)} if root else {}
    result.update({k: v for k, v in extra.items() if v})
    return result


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def fail(message: str, code: ExitCode = ExitCode.FAILURE) -> NoReturn:
    raise MachinaError(message, code)


def run_main(command: click.Command, prog_name: str, args: list[str] | None = None) -> NoReturn:
    """Run a click command and exit with a code from ExitCode; errors are one line on stderr."""
    try:
        result = command.main(args=args, prog_name=prog_name, standalone_mode=False)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except SystemExit as exc:
        # click turns EPIPE on stdout (`machina queue ls | head`) into exit 1 after pacifying the streams;
        # report it the way other Unix tools do, as death by SIGPIPE, so 1 keeps meaning "problems found".
        code = _exit_status(exc.code)
        if code == ExitCode.FAILURE and _stdout_reader_gone():
            code = ExitCode.SIGPIPE
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        code = ExitCode.USAGE
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo(f"{prog_name}: interrupted", err=True)
        code = ExitCode.INTERRUPTED
    except MachinaError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            click.echo(f"{prog_name}: {log.redact(line)}", err=True)
        code = exc.exit_code
    sys.exit(int(code))


def _stdout_reader_gone() -> bool:
    """True when standard output is a pipe whose reader has closed it (poll reports POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), select.POLLOUT)  # type: ignore[union-attr]
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _exit_status(code: object) -> int:
    if code is None:
        return ExitCode.OK
    return code if isinstance(code, int) else ExitCode.FAILURE

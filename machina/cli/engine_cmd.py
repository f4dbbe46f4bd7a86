"""``machina run``, ``machina replay``, ``machina audit verify`` and ``machina cts``: the goal engine's commands."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from machina.cli.common import bootstrap, echo_json, overrides_from, root_option
from machina.exitcodes import ExitCode, MachinaError

_INVALID_REQUEST = ("invalid_request", "unknown_goal", "invalid_inputs")


def _socket_option(func: Any) -> Any:
    return click.option(
        "--socket",
        "socket_path",
        metavar="PATH",
        help="Socket of the running machina-toolhost (default: toolhost.sock in the runtime directory).",
    )(func)


def _read_request(path: str) -> dict[str, Any]:
    from machina.audit.canonical import loads_strict

    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise MachinaError(f"{path}: cannot read: {exc.strerror or exc}", ExitCode.NOINPUT) from None
    except UnicodeDecodeError:
        raise MachinaError(f"{path}: not UTF-8 text", ExitCode.DATAERR) from None
    try:
        request = loads_strict(text)
    except (ValueError, RecursionError) as exc:
        raise MachinaError(f"{path}: not JSON: {exc}", ExitCode.DATAERR) from None
    if not isinstance(request, dict):
        raise MachinaError(f"{path}: a request is a JSON object", ExitCode.DATAERR)
    return request


def _engine(root: str | None, socket_path: str | None) -> Any:
    from machina.engine import Engine
    from machina.engine.toolhost_link import connect_toolhost
    from machina.root import open_root

    cfg = bootstrap("machina", overrides_from(root))
    machina_root = open_root(cfg)
    return cfg, Engine.from_config(cfg, machina_root, connect_toolhost(cfg, machina_root, socket_path))


@click.command()
@click.argument("request_path", metavar="REQUEST.json")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--run-id", metavar="ID", help="Run id (default: time and random); names logs/run_<ID>.jsonl.")
@_socket_option
@root_option
def run(request_path: str, as_json: bool, run_id: str | None, socket_path: str | None, root: str | None) -> int:
    """Run one goal in the foreground and print a summary.

    REQUEST.json is a run request ("-" reads standard input), e.g.
    {"goal_id": "goal.ERROR_SCAN.v1", "inputs": {"input_path": "data/app.log"}}.
    Tools run in the running machina-toolhost, reached through its socket; the run log is
    written to logs/run_<run id>.jsonl under the root.

    Exit status: 0 the goal is done; 1 it is not (failed, noop, asked, breaker); 65 the request is
    invalid (bad JSON, unknown goal, inputs that break the goal's schema); 66 no such file;
    69 the toolhost is not running or stopped answering; 73 the run log cannot be written;
    78 bad configuration.
    """
    request = _read_request(request_path)
    _cfg, engine = _engine(root, socket_path)
    try:
        result = engine.run(request, run_id=run_id)
    except ValueError as exc:  # a run id that is not a safe file name
        raise MachinaError(str(exc), ExitCode.USAGE) from None
    except OSError as exc:  # the run log cannot be created: the run is not started unaudited
        raise MachinaError(
            f"cannot write the run log: {exc} (does the root have logs/? `machina init` adds it)",
            ExitCode.CANTCREAT,
        ) from None
    if as_json:
        echo_json(result.to_dict())
    else:
        _print_summary(result)
    if result.ok:
        return ExitCode.OK
    if result.reason in _INVALID_REQUEST:
        return ExitCode.DATAERR
    if result.reason == "toolhost_unavailable":
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILURE


def _print_summary(result: Any) -> None:
    click.echo(f"{result.status} ({result.reason}) after {result.steps} step(s): {result.goal_id or '?'}")
    if result.error:
        click.echo(f"  error    {result.error}")
    click.echo(f"  run      {result.run_id}")
    click.echo(f"  request  {result.request_id}")
    click.echo(f"  state    {result.state_digest}")
    click.echo(f"  log      {result.log_path}")
    for aid, figures in sorted(result.tool_stats.items()):
        click.echo(f"  tool     {aid} ok={figures.ok} fail={figures.fail} {figures.duration_ms_total:.1f} ms")


@click.command()
@click.argument("log_path", metavar="LOG")
@click.option(
    "--strict",
    "request_path",
    metavar="REQUEST",
    help="Also re-run REQUEST with the logged decisions (no selector, no policy) and compare state digests.",
)
@click.option("--allow-unkeyed", is_flag=True, help="Accept a plain SHA-256 log although MACHINA_AUDIT_KEY is set.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@_socket_option
@root_option
def replay(
    log_path: str,
    request_path: str | None,
    allow_unkeyed: bool,
    as_json: bool,
    socket_path: str | None,
    root: str | None,
) -> int:
    """Verify a run log's hash chain and structure; with --strict, replay it.

    Strict replay re-runs the engine with the logged decisions. Deterministic read-only tools run
    again through the running machina-toolhost; tools with side effects (or not deterministic) are
    answered from the log, never run twice. Exit status: 0 verified (and replayed identically); 1 problems found
    (tampered or damaged log, wrong key, or the replay differs); 65 bad REQUEST; 66 no such file;
    69 the toolhost is not running.
    """
    from machina.audit.verify import verify_log

    if not os.path.isfile(log_path):
        raise MachinaError(f"{log_path}: no such file", ExitCode.NOINPUT)
    if request_path is None:
        cfg = bootstrap("machina", overrides_from(root))
        report = verify_log(log_path, cfg["MACHINA_AUDIT_KEY"], allow_unkeyed=allow_unkeyed)
        problems, detail = report.problems, f"{len(report.events)} events, {report.status}"
    else:
        problems, detail = _strict(request_path, log_path, allow_unkeyed, socket_path, root)
    if as_json:
        echo_json({"log": log_path, "ok": not problems, "problems": problems, "strict": request_path is not None})
    elif problems:
        for problem in problems:
            click.echo(f"{log_path}: {problem}")
    else:
        click.echo(f"{log_path}: ok ({detail})")
    return ExitCode.FAILURE if problems else ExitCode.OK


def _strict(
    request_path: str, log_path: str, allow_unkeyed: bool, socket_path: str | None, root: str | None
) -> tuple[list[str], str]:
    """Strict replay; a log that does not verify is reported without reaching for the toolhost."""
    from machina.audit.replay import strict_replay
    from machina.audit.verify import verify_log

    request = _read_request(request_path)
    cfg = bootstrap("machina", overrides_from(root))
    checked = verify_log(log_path, cfg["MACHINA_AUDIT_KEY"], allow_unkeyed=allow_unkeyed)
    if not checked.ok:
        return checked.problems, ""
    cfg, engine = _engine(root, socket_path)
    outcome = strict_replay(request, log_path, engine, cfg["MACHINA_AUDIT_KEY"], allow_unkeyed=allow_unkeyed)
    detail = f"same states and end ({outcome.log.status}); re-ran {outcome.rerun} read-only tool call(s)"
    return outcome.problems, detail + f", reused {outcome.reused} logged"


@click.group()
def audit() -> None:
    """Check the run logs' hash chains (for cron)."""


@audit.command("verify")
@click.argument("logs", nargs=-1, metavar="[LOG]...")
@click.option("--allow-unkeyed", is_flag=True, help="Accept plain SHA-256 logs although MACHINA_AUDIT_KEY is set.")
@click.option(
    "--allow-incomplete", is_flag=True, help="Do not count runs without a done event (in progress, or crashed)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per log.")
@root_option
def verify(logs: tuple[str, ...], allow_unkeyed: bool, allow_incomplete: bool, as_json: bool, root: str | None) -> int:
    """Verify run logs: every logs/run_*.jsonl of the root, or the LOGs given.

    Prints one line per problem and a summary. A keyed log needs MACHINA_AUDIT_KEY; with the key
    set, an unkeyed log is a problem unless --allow-unkeyed. A run without a done event (still
    running, or its process died) is a problem unless --allow-incomplete.

    Exit status: 0 every log verifies; 1 problems found; 66 a LOG does not exist.
    """
    from machina.audit.verify import run_logs, verify_log
    from machina.root import open_root

    cfg = bootstrap("machina", overrides_from(root))
    paths = list(logs) or run_logs(open_root(cfg).logs)
    for path in paths:
        if not os.path.isfile(path):
            raise MachinaError(f"{path}: no such file", ExitCode.NOINPUT)
    bad = 0
    for path in paths:
        report = verify_log(
            path, cfg["MACHINA_AUDIT_KEY"], allow_unkeyed=allow_unkeyed, allow_incomplete=allow_incomplete
        )
        bad += not report.ok
        if as_json:
            echo_json({"log": path, "ok": report.ok, "problems": report.problems, "status": report.status})
        for problem in [] if as_json else report.problems:
            click.echo(f"{path}: {problem}")
    if not as_json:
        click.echo(f"{len(paths)} log(s) verified, {bad} with problems")
    return ExitCode.FAILURE if bad else ExitCode.OK


@click.command()
@click.argument("manifests", nargs=-1, metavar="[MANIFEST]...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per problem.")
@root_option
def cts(manifests: tuple[str, ...], as_json: bool, root: str | None) -> int:
    """Lint toolpack and goalpack manifests: one line per problem, with a stable code.

    Each MANIFEST is a manifest.json or a pack directory holding one. Without any, the built-in
    packs and the root's toolpacks/ and goalpacks/ are checked. Goals are checked against the
    built-in tools plus the given toolpacks. Codes: CTS0xx files and schemas, CTS1xx tools,
    CTS2xx goals (machina.engine.cts lists them). Exit status: 0 clean, 1 problems, 66 no such file.
    """
    from machina.engine.cts import lint
    from machina.manifests.goals import goalpack_manifests
    from machina.manifests.tools import toolpack_manifests

    cfg = bootstrap("machina", overrides_from(root))
    paths = [os.path.join(m, "manifest.json") if os.path.isdir(m) else m for m in manifests]
    for path in paths:
        if not os.path.exists(path):
            raise MachinaError(f"{path}: no such file", ExitCode.NOINPUT)
    if not paths:
        base = cfg["MACHINA_ROOT"] if cfg["MACHINA_ROOT"] and os.path.isdir(cfg["MACHINA_ROOT"]) else None
        paths = toolpack_manifests(base and os.path.join(base, "toolpacks"))
        paths += goalpack_manifests(base and os.path.join(base, "goalpacks"))
    problems = lint(paths)
    for problem in problems:
        if as_json:
            echo_json({"source": problem.source, "code": problem.code, "message": problem.message})
        else:
            click.echo(str(problem))
    if not as_json:
        click.echo(f"{len(paths)} manifest(s) checked, {len(problems)} problem(s)", err=True)
    return ExitCode.FAILURE if problems else ExitCode.OK


__all__ = ["audit", "cts", "replay", "run"]

"""A job child: the process a worker runs its jobs in, one at a time, so a job that crashes, runs out of
memory or hangs takes down only this process.

Started by the worker as ``python -P -m machina.worker.child FD PARENT_PID`` with a cleared environment,
in its own session (the worker kills its whole process group on a timeout).  It dies with its worker
(``PR_SET_PDEATHSIG``), loads the configuration the worker sends over the pipe (:mod:`.protocol`), builds
one :class:`machina.engine.Engine` with a toolhost client, says ``ready``, then runs each job it is sent
and answers with a summary of the :class:`~machina.engine.RunResult`.

An exception while running a job is reported as a fatal error and the child exits: after an unexpected
failure (``MemoryError`` included) nothing in this process is trusted with another job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import prctl

from machina import config, log
from machina.engine import Engine
from machina.engine.toolhost_link import connect_toolhost
from machina.exitcodes import ExitCode, MachinaError
from machina.hardening import make_undumpable
from machina.manifests.schemacheck import trust_checked
from machina.root import open_root
from machina.worker import protocol
from machina.worker.results import summarize

logger = logging.getLogger(__name__)

#: Test seam (as ``machina.queue.faults``): called with each ``run`` message before the engine sees it.
#: None in production; only a test's own child script sets it, nothing in the environment can.
fault_hook: Callable[[dict[str, Any]], None] | None = None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("machina.worker.child is started by machina-worker, not by hand", file=sys.stderr)
        return ExitCode.USAGE
    fd, parent_pid = int(args[0]), int(args[1])
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the line above took effect
        return ExitCode.UNAVAILABLE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the worker, which decides
    conn = protocol.Channel(socket.socket(fileno=fd))
    try:
        engine = _start(conn)
        if engine is None:
            return ExitCode.UNAVAILABLE
        try:
            _serve(conn, engine)
        finally:
            engine.close()
    except (EOFError, BrokenPipeError, ConnectionResetError, protocol.ProtocolViolation):
        pass  # the worker went away or closed the pipe: nothing left to do
    return ExitCode.OK


def _start(conn: protocol.Channel) -> Engine | None:
    """Read the init message and build the engine; report ``ready`` or the reason it cannot start."""
    message = conn.receive()
    if message.get("op") != protocol.INIT or not isinstance(message.get("config"), dict):
        raise protocol.ProtocolViolation("expected an init message")
    try:
        trust_checked(message.get("schemas_checked", []))
    except ValueError as exc:
        raise protocol.ProtocolViolation(f"init: schemas_checked: {exc}") from None
    try:
        make_undumpable()  # the configuration below holds the secrets; exec made this process dumpable again
        cfg = config.load(environ={}, overrides={str(k): str(v) for k, v in message["config"].items()})
        program = f"machina-worker@{message.get('worker_id', '?')}/child"
        log.setup(program, cfg["MACHINA_LOG_LEVEL"], cfg.secret_values())
        root = open_root(cfg)
        tools = connect_toolhost(cfg, root)
        engine = Engine.from_config(cfg, root, tools)  # under GPU_CENTROID it teaches machina-embed itself
    except MachinaError as exc:
        conn.send({"op": protocol.ERROR, "error": log.redact(str(exc)), "exit_code": int(exc.exit_code)})
        return None
    except Exception as exc:  # a bug or a broken install: say what, the worker backs off and retries
        conn.send({"op": protocol.ERROR, "error": f"{type(exc).__name__}: {log.redact(str(exc))}"})
        return None
    conn.send({"op": protocol.READY, "pid": os.getpid()})
    return engine


def _serve(conn: protocol.Channel, engine: Engine) -> None:
    while True:
        message = conn.receive()
        op = message.get("op")
        if op == protocol.EXIT:
            return
        if op != protocol.RUN:
            raise protocol.ProtocolViolation(f"unexpected op {op!r}")
        try:
            if fault_hook is not None:
                fault_hook(message)
            result = engine.run(message["request"], run_id=message["run_id"])
        except OSError as exc:  # the run log could not be written (disk full): this child is still sound
            conn.send({"op": protocol.ERROR, "error": f"run log not writable: {exc}", "fatal": False})
            continue
        except BaseException as exc:
            _report_fatal(conn, exc)
            raise SystemExit(ExitCode.SOFTWARE) from None
        conn.send({"op": protocol.RESULT, "result": summarize(result)})


def _report_fatal(conn: protocol.Channel, exc: BaseException) -> None:
    if isinstance(exc, MemoryError):
        exc.__traceback__ = None  # lets go of what the job held, so that reporting it can allocate
        error = "MemoryError: the job ran out of memory"
        logger.error("job child ran out of memory")
    else:
        error = f"{type(exc).__name__}: {log.redact(str(exc))}"
        logger.error("job child failed: %s", error, exc_info=exc)
    with contextlib.suppress(OSError, MemoryError):  # if this fails too, the worker sees the pipe close
        conn.send({"op": protocol.ERROR, "error": error, "fatal": True})


if __name__ == "__main__":
    sys.exit(main())

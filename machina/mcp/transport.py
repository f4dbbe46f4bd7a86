"""stdio to a sandboxed MCP server: newline-delimited JSON-RPC on the process's stdin and stdout.

The SDK's own ``stdio_client`` starts the command itself, outside any sandbox; this transport starts the
:class:`machina.sandbox.launch.Launch` that :mod:`machina.mcp.launch` prepared (bubblewrap argv, seccomp
fds, child setup) and hands the SDK the same pair of streams.  One message may be at most
``max_message_bytes`` (a longer line ends the connection: a server may not make us buffer without bound).
The server's stderr is logged, line by line and cut, at debug level.  On the way out stdin is closed, the
server gets a moment to exit, then its whole process group (bubblewrap and the sandbox's pid namespace)
is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable

import anyio
import mcp_types
from mcp.shared.message import SessionMessage

from machina.sandbox.launch import Launch

log = logging.getLogger(__name__)

EXIT_GRACE_S = 1.0
STDERR_LINE_CHARS = 300


@contextlib.asynccontextmanager
async def sandboxed_stdio(
    launch: Launch, *, name: str, max_message_bytes: int, on_lost: Callable[[str], None]
) -> AsyncIterator[tuple[object, object]]:
    """The SDK's (read stream, write stream) for a server started from ``launch``.

    ``on_lost(reason)`` is called once when the server's stdout ends or breaks the framing, so the
    connection's owner can notice a crash while no call is in flight.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=launch.env,
            cwd=launch.cwd,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec,
            start_new_session=True,
            limit=max_message_bytes,
        )
    except BaseException:
        launch.finished()
        raise
    launch.spawned()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        reason = "the server closed its stdout (it exited or crashed)"
        async with read_writer:
            while True:
                try:
                    line = await stdout.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    reason = f"the server sent a message over {max_message_bytes} bytes"
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
                except ValueError as exc:
                    await read_writer.send(exc)
                    continue
                await read_writer.send(SessionMessage(message))
        on_lost(reason)

    async def write_stdin() -> None:
        async with write_reader:
            async for session_message in write_reader:
                data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    stdin.write(data.encode() + b"\n")
                    await stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    on_lost("the server closed its stdin (it exited or crashed)")
                    return

    async def log_stderr() -> None:
        while True:
            try:
                line = await stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()[:STDERR_LINE_CHARS]
            log.debug("mcp server %s stderr: %s", name, text)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_stdout)
            tasks.start_soon(write_stdin)
            tasks.start_soon(log_stderr)
            try:
                yield read_stream, write_stream
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(proc)
                tasks.cancel_scope.cancel()
    finally:
        launch.finished()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Close stdin, wait a moment, then kill the process group (the whole sandbox with bubblewrap)."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), EXIT_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group is bubblewrap and all below it
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), EXIT_GRACE_S)

"""The Python executor: the process inside a sandbox that runs built-in tools and plugins.

Started by the toolhost as ``python -I -m machina.sandbox.executor --fd N [...]`` inside bubblewrap (or the
fallback), it imports what it needs, drops to the tool uid (``--drop UID:GID``, when the toolhost is
root), sets no_new_privs, loads the no-spawn seccomp layer (``--no-spawn-fd``: built-ins and plugins without
the SHELL capability start neither programs nor processes), says ``ready`` and then serves calls on the channel
(:mod:`machina.sandbox.channel`) until the toolhost closes it, or after one call with ``--one-shot``.

Messages (JSON frames):

    toolhost -> executor   {"t": "call", "tool": NAME, "inputs": {...}, "params": {...},
                            "opened": [{"path": P, "size": N}, ...]}   (+ one fd per entry: files the
                                                                       tool will read, opened ahead)
                           {"t": "plugin", "name": NAME, "source": TEXT, "inputs": {...}, "params": {...}}
                           {"t": "answer", "ok": BOOL, "result": {...}, "error": TEXT, "status": TEXT} (+ fds)
    executor -> toolhost   {"t": "ready", "pid": N, "uid": N, "gid": N}
                           {"t": "host", "op": OP, "args": {...}}      a request to the toolhost's broker
                           {"t": "done", "ok": BOOL, "status": TEXT, "output": {...}, "error": TEXT}

A pre-started executor keeps a per-call CPU limit (``--cpu-per-call``) by raising its soft RLIMIT_CPU
before each call to what it has used plus the allowance.
"""

from __future__ import annotations

import argparse
import array
import base64
import math
import os
import resource
import socket
import sys
from typing import IO, Any

import prctl

from machina import toolapi, wirejson
from machina.sandbox import bpf, channel
from machina.tools.base import ToolContext, ToolFailure, adopt

HEAVY_TOOLS = ("http_get",)  # imported only by executors of the net profile


class ExecutorContext:
    """The ToolContext of one call: every request goes to the toolhost over the channel.

    ``opened`` and ``fds`` are the files the toolhost opened for reading before the call (the entries of the
    call's ``"opened"`` list and the descriptors that came with it, in the same order): ``open_read`` of
    one of those paths takes its descriptor instead of asking.  What the tool did not take is closed by
    :meth:`close`."""

    def __init__(
        self, sock: socket.socket, params: dict[str, Any], opened: object = None, fds: list[int] | None = None
    ) -> None:
        self.sock = sock
        self.params = params
        self._opened: dict[str, tuple[int, dict[str, Any]]] = {}
        fds = fds or []
        entries = opened if isinstance(opened, list) and len(opened) == len(fds) else []
        for entry, fd in zip(entries, fds, strict=False):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"] not in self._opened:
                self._opened[entry["path"]] = (fd, {"size": entry.get("size")})
            else:
                os.close(fd)
        for fd in fds[len(entries) :]:  # descriptors that match no entry
            os.close(fd)

    def close(self) -> None:
        for fd, _ in self._opened.values():
            os.close(fd)
        self._opened.clear()

    def host(self, op: str, **args: Any) -> tuple[dict[str, Any], list[int]]:
        channel.send(self.sock, {"t": "host", "op": op, "args": args})
        answer, fds = channel.recv(self.sock)
        if answer.get("t") != "answer":
            raise channel.ChannelError(f"expected an answer, got {answer.get('t')!r}")
        if not answer.get("ok"):
            raise ToolFailure(str(answer.get("error", "refused")), status=str(answer.get("status", "tool_error")))
        return answer.get("result") or {}, fds

    def open_read(self, path: str) -> tuple[IO[bytes], dict[str, Any]]:
        ahead = self._opened.pop(path, None)
        if ahead is not None:
            return adopt(ahead[0], "rb"), ahead[1]
        result, fds = self.host("open_read", path=path)
        return adopt(fds[0], "rb"), result

    def create_file(self, path: str, *, overwrite: bool, mkdirs: bool) -> tuple[IO[bytes], str]:
        result, fds = self.host("create_file", path=path, overwrite=overwrite, mkdirs=mkdirs)
        return adopt(fds[0], "wb"), str(result["token"])

    def commit(self, handle: str) -> dict[str, Any]:
        return self.host("commit", token=handle)[0]

    def write_file(self, path: str, data: bytes, *, overwrite: bool, mkdirs: bool) -> dict[str, Any]:
        try:
            payload = {"text": data.decode("utf-8")}
        except UnicodeDecodeError:
            payload = {"base64": base64.b64encode(data).decode("ascii")}
        return self.host("write_file", path=path, overwrite=overwrite, mkdirs=mkdirs, **payload)[0]

    def open_stream(self, stream: str, mode: str) -> IO[bytes] | None:
        _, fds = self.host("open_stream", stream=stream, mode=mode)
        if not fds:
            return None
        return adopt(fds[0], "rb" if mode == "read" else "ab")

    def embed(self, texts: list[str], *, fallback: bool) -> tuple[list[list[float]], str]:
        result, _ = self.host("embed", texts=texts, fallback=fallback)
        return decode_vectors(result["vectors"], int(result["dim"])), str(result["embedder"])


def decode_vectors(packed: str, dim: int) -> list[list[float]]:
    """Vectors travel as base64 of little-endian float32, row after row."""
    values = array.array("f")
    values.frombytes(base64.b64decode(packed))
    if sys.byteorder != "little":
        values.byteswap()
    return [list(values[i : i + dim]) for i in range(0, len(values), dim)]


def run_call(message: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Run one call; every outcome becomes a ``done`` message."""
    try:
        if message["t"] == "plugin":
            from machina.plugins.api import run_plugin

            output = run_plugin(message["name"], message["source"], message["inputs"], ctx)
        else:
            from machina import tools

            output = tools.load(message["tool"])(message["inputs"], ctx)
        wirejson.dumps(output)  # must travel as JSON: fail here, with a clear error, if it cannot
        return {"t": "done", "ok": True, "status": toolapi.OK, "output": output}
    except ToolFailure as exc:
        return {"t": "done", "ok": False, "status": exc.status, "output": exc.output, "error": str(exc)}
    except channel.ChannelError:
        raise
    except MemoryError:
        return {"t": "done", "ok": False, "status": toolapi.TOOL_ERROR, "error": "out of memory (address-space limit)"}
    except Exception as exc:
        return {"t": "done", "ok": False, "status": toolapi.TOOL_ERROR, "error": f"{type(exc).__name__}: {exc}"}


def _preload(net: bool) -> None:
    """Import every tool now: after the drop the interpreter's own files may be out of reach (fallback)."""
    import machina.plugins.api
    from machina import tools

    for name in tools.EXECUTOR_TOOLS:
        if name not in HEAVY_TOOLS or net:
            tools.load(name)
    if net:
        import machina.net.fetch  # noqa: F401


def _limit_cpu(allowance: int) -> None:
    if allowance <= 0:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + allowance
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="machina-executor", description="Runs tools inside a Machina sandbox.")
    parser.add_argument("--fd", type=int, required=True, help="descriptor of the channel to the toolhost")
    parser.add_argument("--drop", metavar="UID:GID", help="drop to this uid and gid before serving")
    parser.add_argument(
        "--no-spawn-fd", type=int, metavar="FD", help="seccomp program forbidding new programs and processes"
    )
    parser.add_argument("--one-shot", action="store_true", help="serve one call, then exit")
    parser.add_argument("--net", action="store_true", help="load the network tools")
    parser.add_argument("--cpu-per-call", type=int, default=0, metavar="SEC", help="CPU seconds per call")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    _preload(args.net)
    spawn_guard = bpf.read_program(args.no_spawn_fd) if args.no_spawn_fd is not None else b""
    if args.drop:
        from machina.sandbox.drop import drop_privileges

        uid, gid = (int(x) for x in args.drop.split(":"))
        drop_privileges(uid, gid)
    prctl.set_no_new_privs(True)
    if spawn_guard:
        bpf.load_program(spawn_guard)
    channel.send(sock, {"t": "ready", "pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()})
    while True:
        try:
            message, fds = channel.recv(sock)
        except channel.ChannelError:
            return 0  # the toolhost closed the channel: retire
        if message.get("t") not in ("call", "plugin"):
            for fd in fds:
                os.close(fd)
            return 2
        _limit_cpu(args.cpu_per_call)
        ctx = ExecutorContext(sock, message.get("params") or {}, message.get("opened"), fds)
        try:
            done = run_call(message, ctx)
        finally:
            ctx.close()
        channel.send(sock, done)
        if args.one_shot:
            return 0


if __name__ == "__main__":
    sys.exit(main())

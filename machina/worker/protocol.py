"""What a worker and its job children say to each other, and what a child is given to start with.

The two ends of a ``socketpair`` carry length-prefixed JSON messages (:class:`Channel`; never pickle:
the parent treats what a child sends as untrusted data).  One exchange at a time::

    parent -> child   {"op": "init", "worker_id": "1", "config": {NAME: raw value, ...}, "schemas_checked": [...]}
    child  -> parent  {"op": "ready", "pid": 1234}  |  {"op": "error", "error": "...", "exit_code": 69}
    parent -> child   {"op": "run", "job": NAME, "attempt": 1, "run_id": ID, "request": {...}}
    child  -> parent  {"op": "result", "result": {...}}  |  {"op": "error", "error": "...", "fatal": true}
    parent -> child   {"op": "exit"}

The configuration travels in the ``init`` message as the raw text of every variable that is not at its
default, so the child resolves exactly what the parent did without reading the environment or the env
file.  Secrets stay behind except ``MACHINA_AUDIT_KEY``, which keys the run-log chain: it reaches the
child over the pipe, never through its environment (``/proc/<pid>/environ``) or its command line.
``schemas_checked`` lists the digests of the manifest schemas the worker found valid, so the child does not
check them again (:mod:`machina.manifests.schemacheck`).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import machina
from machina import wirejson
from machina.config import Config, Source

#: Largest message either side accepts.  Results are summarised by the child to stay far below it.
MESSAGE_MAX = 4 * 1024 * 1024
#: Once a message has begun, the rest of it must follow within this long.
BODY_TIMEOUT_S = 10.0
_HEADER = struct.Struct("!I")
#: The one secret a job child needs (the run-log chain key); every other secret stays with the parent.
CHILD_SECRETS = frozenset({"MACHINA_AUDIT_KEY"})
#: Environment variables a child keeps from its parent besides the fixed ones: none of them is a secret.
PASSED_ENVIRONMENT = ("TZ", "JOURNAL_STREAM", "CUDA_VISIBLE_DEVICES")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

INIT, READY, RUN, RESULT, ERROR, EXIT = "init", "ready", "run", "result", "error", "exit"


class ProtocolViolation(Exception):
    """The other end sent something that is not a message of this protocol."""


class Unread(EOFError):
    """The other end went away with what we sent still unread (ECONNRESET on a Unix stream socket)."""


class Channel:
    """One end of the socketpair: messages framed by a 4-byte big-endian length, JSON inside.

    A message whose header has arrived must arrive whole within :data:`BODY_TIMEOUT_S`: a child that sends
    half a message and stops cannot hold its worker's slot.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(True)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Mapping[str, Any]) -> None:
        data = wirejson.dumps(message)
        self.sock.sendall(_HEADER.pack(len(data)) + data)

    def poll(self, timeout: float) -> bool:
        """True when a message, or the end of the pipe, is waiting."""
        readable, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        return bool(readable)

    def receive(self) -> dict[str, Any]:
        """The next message; EOFError when the other end is gone (Unread when it never read what we sent),
        ProtocolViolation when it is not ours."""
        header = self._read(_HEADER.size, None)
        (length,) = _HEADER.unpack(header)
        if length > MESSAGE_MAX:
            raise ProtocolViolation(f"message of {length} bytes is over the {MESSAGE_MAX} byte limit")
        data = self._read(length, time.monotonic() + BODY_TIMEOUT_S)
        try:
            message = wirejson.loads(data)
        except ValueError:
            raise ProtocolViolation("message is not JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise ProtocolViolation("message is not an object with an op")
        return message

    def _read(self, size: int, deadline: float | None) -> bytes:
        chunks, missing = [], size
        while missing:
            if deadline is not None and not self.poll(deadline - time.monotonic()):
                raise ProtocolViolation(f"message incomplete after {BODY_TIMEOUT_S:g} s")
            try:
                chunk = self.sock.recv(min(missing, 1 << 20))
            except ConnectionResetError:
                # Linux resets the survivor only when the closing end still had unread data queued.
                raise Unread("the other end closed the pipe without reading what was sent") from None
            if not chunk:
                if missing == size and deadline is None:
                    raise EOFError("the other end closed the pipe")
                raise ProtocolViolation("the pipe closed in the middle of a message")
            chunks.append(chunk)
            missing -= len(chunk)
            deadline = deadline or time.monotonic() + BODY_TIMEOUT_S
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


def child_config(cfg: Config, runtime_dir: str) -> dict[str, str]:
    """The raw settings a job child loads its configuration from: the parent's, minus its secrets.

    ``MACHINA_RUNTIME_DIR`` is pinned to the directory the parent resolved (under systemd it comes from
    ``$RUNTIME_DIRECTORY``, which the child's cleared environment does not have), and the env file is not
    read again.
    """
    values: dict[str, str] = {}
    for setting in cfg:
        if setting.source is Source.DEFAULT or setting.value is None:
            continue
        if setting.var.secret and setting.name not in CHILD_SECRETS:
            continue
        values[setting.name] = setting.var.kind.render(setting.value)
    values["MACHINA_RUNTIME_DIR"] = runtime_dir
    values["MACHINA_ENV_FILE"] = "/dev/null"
    return values


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A job child's whole environment: a fixed PATH and locale, where to import Machina from, and a few
    harmless variables of the parent's (time zone, journal stream, GPU selection).  No MACHINA_* value and
    no secret: the configuration arrives over the pipe."""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(machina.__file__))),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({name: environ[name] for name in PASSED_ENVIRONMENT if environ.get(name)})
    return env

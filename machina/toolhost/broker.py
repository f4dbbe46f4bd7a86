"""The toolhost's side of a sandboxed call: it answers what the tool asks for, within the call's grant.

A sandbox has no access to MACHINA_ROOT, the queue or the embedding service.  A tool asks over its
channel and the broker answers, after checking the *grant* the toolhost gave this call (from the built-in
tool's manifest, or from a plugin's allowed capabilities), never anything the tool claims:

    op             grant          answer
    open_read      fs_read        a read-only descriptor of a file under the root (machina.toolhost.confine)
    list_dir       fs_read        the entries below a directory, as data (never a directory descriptor)
    create_file    fs_write       a write descriptor of a new temporary file beside the target
    write_file     fs_write       up to INLINE_WRITE_MAX bytes (``text``, or ``base64``) written to such a file,
                                  fsynced and committed: create_file, a write and commit in one request
    open_append    fs_write       an append-only descriptor of a file under the root
    delete         fs_write       the file moved to state/trash/ (recoverable by the operator)
    commit         fs_write       the temporary file renamed into place, the old one kept as .bak
    open_stream    memory_read    a descriptor of memory/<stream>.jsonl, read-only
                   memory_write   ... or append-only (created when missing)
    embed          embed          vectors from machina-embed (float32, base64)
    memory_search  memory_read    hits of the memory index (BM25, recency, MMR) over the streams
    run_log        fs_read        a run log (the calling run's own, or a file the tool may read), opened
                                  read-only, with machina.audit.verify's verdict on it (checked here: the
                                  HMAC key, MACHINA_AUDIT_KEY, never enters a sandbox)
    enqueue        queue_write    a follow-up job, its _capabilities narrowed to the caller's
    host_metrics   proc_read      the toolhost process's own resource use

Temporary files a call did not commit are removed when the call ends, whatever happened to the tool.
"""

from __future__ import annotations

import array
import base64
import binascii
import contextlib
import fcntl
import logging
import os
import resource
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from machina import toolapi
from machina.exitcodes import MachinaError
from machina.toolhost.confine import ConfinedRoot, PendingWrite
from machina.tools.base import INLINE_WRITE_MAX, ToolFailure

log = logging.getLogger(__name__)

OP_GRANTS = {
    "open_read": "fs_read",
    "list_dir": "fs_read",
    "create_file": "fs_write",
    "open_append": "fs_write",
    "delete": "fs_write",
    "commit": "fs_write",
    "write_file": "fs_write",
    "embed": "embed",
    "memory_search": "memory_read",
    "run_log": "fs_read",
    "enqueue": "queue_write",
    "host_metrics": "proc_read",
}
MAX_EMBED_TEXTS = 100_000
MAX_LIST_DEPTH = 32
MAX_CHECKED_LOG_BYTES = 64 * 1024 * 1024
MAX_PREOPENED = 2  # files opened ahead of a call (the channel carries at most 4 descriptors a frame)


@dataclass(frozen=True)
class CallContext:
    """Who a call runs for: passed on to memory records and used to narrow enqueued capabilities."""

    run_id: str | None = None
    request_id: str | None = None
    capabilities: dict[str, Any] | None = None  # the calling job's _capabilities; None: not limited


class Broker:
    """Shared by every call; each call gets its own :class:`CallScope`."""

    def __init__(
        self,
        root: ConfinedRoot,
        *,
        embedder: Callable[[list[str], bool], tuple[list[list[float]], str]],
        enqueue: Callable[[dict[str, Any], CallContext], dict[str, Any]],
        metrics: Callable[[], dict[str, Any]],
        fsync: bool,
        memory_search: Callable[[str, list[str], int, float], list[dict[str, Any]]] | None = None,
        audit_key: str | None = None,
    ) -> None:
        self.root = root
        self.embedder = embedder
        self.enqueue = enqueue
        self.metrics = metrics
        self.fsync = fsync
        self.memory_search = memory_search
        self.audit_key = audit_key

    def scope(self, grants: frozenset[str], context: CallContext) -> CallScope:
        return CallScope(self, grants, context)


@dataclass
class CallScope:
    broker: Broker
    grants: frozenset[str]
    context: CallContext
    pending: dict[str, PendingWrite] = field(default_factory=dict)

    def answer(self, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """The answer frame for one request, and the descriptors to send with it (the caller closes them)."""
        try:
            result, fds = self._handle(op, args)
        except ToolFailure as exc:
            return {"t": "answer", "ok": False, "status": exc.status, "error": str(exc)}, []
        except (TypeError, KeyError, ValueError) as exc:
            return {"t": "answer", "ok": False, "status": toolapi.TOOL_ERROR, "error": f"bad {op} request: {exc}"}, []
        except OSError as exc:
            return {"t": "answer", "ok": False, "status": toolapi.TOOL_ERROR, "error": f"{op}: {exc.strerror}"}, []
        return {"t": "answer", "ok": True, "result": result}, fds

    def _handle(self, op: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        if op == "open_stream":
            mode = args["mode"]
            self._require("memory_write" if mode == "append" else "memory_read", op)
            fd = self.broker.root.open_stream(args["stream"], append=mode == "append")
            return {}, [] if fd is None else [fd]
        required = OP_GRANTS.get(op)
        if required is None:
            raise ToolFailure(f"unknown host operation {op!r}")
        self._require(required, op)
        return getattr(self, "_op_" + op)(args)

    def preopen(self, inputs: dict[str, Any], names: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[int]]:
        """What ``open_read`` would answer for each input in ``names``, asked before the call: the entries
        (``{"path", "size"}``) and their descriptors, in the same order.  A path that cannot be opened (or a
        call without the grant) is left out, so the tool asks for it itself and gets the refusal then."""
        opened: list[dict[str, Any]] = []
        fds: list[int] = []
        if "fs_read" not in self.grants:
            return opened, fds
        for name in names[:MAX_PREOPENED]:
            path = inputs.get(name)
            if not isinstance(path, str) or any(entry["path"] == path for entry in opened):
                continue
            try:
                fd, size = self.broker.root.open_read(path)
            except (ToolFailure, OSError):
                continue
            opened.append({"path": path, "size": size})
            fds.append(fd)
        return opened, fds

    def _require(self, grant: str, op: str) -> None:
        if grant not in self.grants:
            raise ToolFailure(f"{op} is not granted to this tool (needs {grant})", status=toolapi.DENIED)

    def _op_open_read(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        fd, size = self.broker.root.open_read(args["path"])
        return {"size": size}, [fd]

    def _op_list_dir(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        entries, truncated = self.broker.root.list_dir(
            str(args["path"]), depth=max(1, min(int(args["depth"]), MAX_LIST_DEPTH)), limit=int(args["limit"])
        )
        return {"entries": entries, "truncated": truncated}, []

    def _op_open_append(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return {}, [self.broker.root.open_append(args["path"], create=bool(args.get("create")))]

    def _op_delete(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return self.broker.root.delete(args["path"]), []

    def _op_create_file(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        pending, fd = self.broker.root.create_pending(
            args["path"], overwrite=bool(args.get("overwrite")), mkdirs=bool(args.get("mkdirs"))
        )
        token = secrets.token_hex(8)
        self.pending[token] = pending
        return {"token": token}, [fd]

    def _op_commit(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        pending = self.pending.pop(str(args["token"]), None)
        if pending is None:
            raise ToolFailure("commit of an unknown or already committed file")
        return self.broker.root.commit(pending, fsync=True), []

    def _op_write_file(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        data = _inline_data(args)
        pending, fd = self.broker.root.create_pending(
            args["path"], overwrite=bool(args.get("overwrite")), mkdirs=bool(args.get("mkdirs"))
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            self.broker.root.discard(pending)
            raise
        return self.broker.root.commit(pending, fsync=True), []

    def _op_embed(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        texts = args["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or len(texts) > MAX_EMBED_TEXTS:
            raise ToolFailure("embed needs a list of texts")
        vectors, embedder = self.broker.embedder(texts, bool(args.get("fallback")))
        dim = len(vectors[0]) if vectors else 0
        return {"vectors": pack_vectors(vectors), "dim": dim, "embedder": embedder}, []

    def _op_memory_search(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        if self.broker.memory_search is None:
            raise ToolFailure("the memory index is not available in this toolhost")
        streams = args.get("streams") or []
        if not isinstance(streams, list):
            raise ToolFailure("streams must be a list of stream names")
        hits = self.broker.memory_search(
            str(args["query"]), streams, int(args["top_k"]), float(args.get("half_life_days", 7.0))
        )
        return {"hits": hits}, []

    def _op_run_log(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        from machina.audit.verify import verify_data

        if args.get("path"):
            path = str(args["path"])
            fd, size = self.broker.root.open_read(path)
        elif self.context.run_id:
            path = f"logs/run_{self.context.run_id}.jsonl"
            fd, size = self.broker.root.open_run_log(self.context.run_id)
        else:
            raise ToolFailure("no run to summarise: this call belongs to no run (give a path)")
        try:
            if size > MAX_CHECKED_LOG_BYTES:
                raise ToolFailure(f"{path} is {size} bytes: too large to check here (machina audit verify can)")
            data = os.pread(fd, MAX_CHECKED_LOG_BYTES + 1, 0)
            report = verify_data(
                data, path, self.broker.audit_key, allow_incomplete=True, in_progress=lambda: _locked(fd)
            )
        except BaseException:
            os.close(fd)
            raise
        verdict = {
            "ok": report.ok,
            "problems": report.problems[:20],
            "complete": report.complete,
            "in_progress": report.in_progress,
            "chain_alg": report.start.get("chain_alg"),
            "lines": len(report.events),
        }
        return {"path": path, "chain": verdict}, [fd]

    def _op_enqueue(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        request = args["request"]
        if not isinstance(request, dict):
            raise ToolFailure("request must be a JSON object")
        return self.broker.enqueue(request, self.context), []

    def _op_host_metrics(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        return self.broker.metrics(), []

    def close(self) -> None:
        for pending in self.pending.values():
            self.broker.root.discard(pending)
        self.pending.clear()


def _inline_data(args: dict[str, Any]) -> bytes:
    """The bytes of a ``write_file`` request: ``text`` (UTF-8) or ``base64``, at most INLINE_WRITE_MAX."""
    if isinstance(args.get("text"), str):
        data = args["text"].encode("utf-8")
    elif isinstance(args.get("base64"), str):
        try:
            data = base64.b64decode(args["base64"], validate=True)
        except binascii.Error:
            raise ToolFailure("write_file: base64 is not valid base64") from None
    else:
        raise ToolFailure("write_file needs text or base64")
    if len(data) > INLINE_WRITE_MAX:
        raise ToolFailure(f"write_file takes at most {INLINE_WRITE_MAX} bytes (create_file and commit take more)")
    return data


def _locked(fd: int) -> bool:
    """Whether another open file holds an exclusive flock on this file (a run log's writer does)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def pack_vectors(vectors: list[list[float]]) -> str:
    values = array.array("f", [x for vec in vectors for x in vec])
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


class ServiceEmbedder:
    """Vectors from machina-embed; with ``fallback`` the local hash embedding when the service is down."""

    def __init__(self, socket_path: str, dim: int, timeout_s: float = 30.0) -> None:
        self.socket_path = socket_path
        self.dim = dim
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()  # one EmbedClient (itself thread-safe), replaced after a failure

    def __call__(self, texts: list[str], fallback: bool) -> tuple[list[list[float]], str]:
        if not texts:
            return [], "machina-embed"
        try:
            return self._service(texts), "machina-embed"
        except (ImportError, MachinaError, OSError) as exc:
            reason = f"machina-embed is not available at {self.socket_path} ({exc})"
        if not fallback:
            raise ToolFailure(reason)
        try:
            from machina.embed.hashing import hash_embed
        except ImportError:
            raise ToolFailure(reason + " and no local embedding is installed") from None
        log.info("%s: ranking with the local hash embedding", reason)
        return hash_embed(texts, self.dim).tolist(), "hash (local fallback: machina-embed unavailable)"

    def _service(self, texts: list[str]) -> list[list[float]]:
        from machina.embed.client import EmbedClient

        with self._lock:
            if self._client is None:
                self._client = EmbedClient(self.socket_path, timeout=self.timeout_s)
            client = self._client
        try:
            return [list(map(float, v)) for v in client.embed(texts)]
        except (MachinaError, OSError):
            with self._lock:
                if self._client is client:
                    self._client = None
            with contextlib.suppress(Exception):
                client.close()
            raise


def process_metrics(started: float, counters: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The toolhost's own resource use (AID.PROC.SELF_METRICS.v1)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - started, 3),
        "max_rss_kb": usage.ru_maxrss,
        "cpu_user_s": round(usage.ru_utime, 3),
        "cpu_system_s": round(usage.ru_stime, 3),
        "children_cpu_s": round(children.ru_utime + children.ru_stime, 3),
        "open_fds": len(os.listdir("/proc/self/fd")),
        **counters(),
    }

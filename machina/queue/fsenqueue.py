"""Enqueue: a job committed to the WAL, then placed in ``inbox/`` (DESIGN.md section 3)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Sequence
from typing import Any

from machina.log import fields
from machina.queue.base import (
    EnqueueResult,
)
from machina.queue.combining import Combiner, CombinerFailed
from machina.queue.dedup import Reservation
from machina.queue.durable import place
from machina.queue.errors import (
    DedupConflict,
    QueuedNotDurable,
    QueueError,
    QueueNotWritable,
)
from machina.queue.faults import point as fault_point
from machina.queue.fscore import QueueCore
from machina.queue.names import (
    DEFAULT_PRIORITY,
    JobRef,
    parse_name,
)
from machina.queue.request import Request, as_request, job_priority
from machina.queue.wal import encode_job
from machina.queue.walindex import DedupEntry

log = logging.getLogger(__name__)


class EnqueueOps(QueueCore):
    """Enqueue: validation, dedup, the WAL commit point, the placement of the inbox file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: concurrent enqueue() calls are committed by one thread at a time, in batches (see combining.py)
        self._combiner: Combiner[tuple[Request, int], EnqueueResult | Exception] = Combiner(self._commit_rounds)

    def _let_go_after_fork(self) -> None:
        super()._let_go_after_fork()
        self._combiner.after_fork_in_child()

    def enqueue(
        self, request: dict[str, Any] | Request, request_id: str | None = None, priority: int | None = None
    ) -> EnqueueResult:
        req = as_request(request, request_id)
        prio = job_priority(req, priority)
        if self._writer is not None:
            try:
                result = self._combiner.submit((req, prio))
            except CombinerFailed as exc:
                raise QueueError(
                    f"the enqueue failed in the thread that committed it ({exc}); the job may or may not be"
                    " queued: send it again with its request_id"
                ) from exc
            if isinstance(result, Exception):
                raise result
            return result
        return self._enqueue_placed(req, prio)

    @property
    def commits_batches(self) -> bool:
        return self._writer is not None  # one WAL group commit per batch; without the WAL, one fsync per job

    def enqueue_batch(self, requests: Sequence[Request]) -> list[EnqueueResult | Exception]:
        """Enqueue validated requests with one commit for all: every ENQ record is appended, one group commit
        makes them durable together, then each file is placed.  One result per request, in order: its
        :class:`EnqueueResult`, or the exception :meth:`enqueue` would have raised for it (nothing of that
        request was queued).  Copies of one ``request_id`` in a batch are committed one round apart, so
        the later copies are answered as repeats of the first."""
        if self._writer is None:
            return [self._one_of_many(req) for req in requests]
        return self._commit_rounds([(req, job_priority(req, None)) for req in requests])

    def _commit_rounds(self, batch: Sequence[tuple[Request, int]]) -> list[EnqueueResult | Exception]:
        """Commit ``batch``, copies of one request_id a round apart (see :meth:`enqueue_batch`)."""
        given = [req.request_id for req, _ in batch if req.request_id is not None]
        if len(set(given)) == len(given):
            return self._commit_round(list(batch))  # no copies: one round (the sorting below is not free)
        results: list[EnqueueResult | Exception | None] = [None] * len(batch)
        todo = list(range(len(batch)))
        while todo:
            rids: set[str] = set()
            now: list[int] = []
            later: list[int] = []
            for i in todo:
                rid = batch[i][0].request_id
                (later if rid is not None and rid in rids else now).append(i)
                if rid is not None:
                    rids.add(rid)
            done = self._commit_round([batch[i] for i in now])
            for i, result in zip(now, done, strict=True):
                results[i] = result
            todo = later
        return results  # type: ignore[return-value]

    def _one_of_many(self, req: Request) -> EnqueueResult | Exception:
        try:
            return self.enqueue(req)
        except (QueueError, OSError) as exc:
            return exc

    def _reserve(self, req: Request) -> Reservation | EnqueueResult | None:
        """The request_id's dedup reservation (None without an id or with dedup off), or the answer to a
        repeat (DedupConflict when the body differs)."""
        rid = req.request_id
        if rid is None or not self._dedup.enabled:
            return None
        found = self._dedup.begin(rid, req.sha256, self._now_ms())
        if isinstance(found, DedupEntry):
            return self._answer_repeat(rid, req, found)
        return found

    def _enqueue_placed(self, req: Request, prio: int) -> EnqueueResult:
        """Without the WAL: the file is placed, then its directory fsynced."""
        rid = req.request_id
        reservation = self._reserve(req)
        if isinstance(reservation, EnqueueResult):
            return reservation
        try:
            ref = self._write_job(req, prio)
            self._sync_placed(ref, rid)
        except QueuedNotDurable as exc:
            placed = parse_name(exc.name)
            if reservation is not None and placed is not None:
                # The job is in the queue after all: a repeat must point at it.
                self._dedup.finish(rid, reservation, placed.name, placed.epoch_ms)  # type: ignore[arg-type]
            raise
        except BaseException:
            if reservation is not None:
                self._dedup.abort(rid, reservation)  # type: ignore[arg-type]
            raise
        if reservation is not None:
            self._dedup.finish(rid, reservation, ref.name, ref.epoch_ms)  # type: ignore[arg-type]
        self._inbox.push(ref.file)
        log.debug("enqueued", extra=fields(job=ref.name, request_id=rid))
        return EnqueueResult(ref.name, rid, False)

    def _commit_round(self, batch: list[tuple[Request, int]]) -> list[EnqueueResult | Exception]:
        """The WAL is the commit point: each job's ENQ record, body included, is appended, one group commit
        (one fdatasync shared with every other enqueuer waiting) makes them durable, then each inbox file
        is written without an fsync of its own.  A crash after the sync leaves records whose files
        :mod:`machina.queue.rebuild` places again; the checkpoint syncs the files before it lets the records
        go (DESIGN.md section 3).  No two requests of ``batch`` share a request_id."""
        results: list[EnqueueResult | Exception | None] = [None] * len(batch)
        staged: list[_Staged] = []
        try:
            for i, (req, prio) in enumerate(batch):
                try:
                    entry = self._stage(req, prio)
                except (QueueError, OSError) as exc:
                    results[i] = exc
                    continue
                if isinstance(entry, EnqueueResult):
                    results[i] = entry
                else:
                    entry.index = i
                    staged.append(entry)
            if staged:
                self._commit_staged(staged, results)
        finally:
            for entry in staged:
                entry.settle(self)  # whatever happened, no segment stays pinned and no copy waits forever
        return results  # type: ignore[return-value]

    def _stage(self, req: Request, prio: int) -> _Staged | EnqueueResult:
        """Dedup, then the ENQ record appended (not yet synced): a repeat's answer, or the staged job."""
        assert self._writer is not None
        rid = req.request_id
        reservation = self._reserve(req)
        if isinstance(reservation, EnqueueResult):
            return reservation
        try:
            ref = self._names.next(prio, rid)
            record: dict[str, Any] = {"t": "ENQ", "ts": ref.epoch_ms, "name": ref.name, "prio": prio}
            if rid is not None:
                record.update(rid=rid, sha=req.sha256)
            try:
                line = encode_job(record, req.canonical, self.config.wal_crc32)
                segment = self._writer.commit_append(line, record)
            except OSError as exc:
                self._reraise("log job", exc)
        except BaseException:
            if reservation is not None:
                self._dedup.abort(rid, reservation)  # type: ignore[arg-type]
            raise
        self._count("ENQ")
        return _Staged(req, ref, segment, reservation)

    def _commit_staged(self, staged: list[_Staged], results: list[EnqueueResult | Exception | None]) -> None:
        for _ in staged:
            fault_point("enqueue.logged")
        try:
            fault_point("enqueue.sync")
            if self.config.fsync:
                self._commit.sync()
        except OSError as exc:
            for entry in staged:
                self._cancel_enqueue(entry.ref, entry.req.request_id)
                entry.abandon(self)
            try:
                self._reraise("fsync", exc)
            except (QueueError, OSError) as error:
                for entry in staged:
                    results[entry.index] = error
            return
        for _ in staged:
            fault_point("enqueue.committed")
        for entry in staged:
            try:
                self._place_job(entry.ref, entry.req.canonical, entry.req.request_id)
            except (QueueError, OSError) as exc:
                entry.abandon(self)
                results[entry.index] = exc
                continue
            entry.accept(self)
            results[entry.index] = EnqueueResult(entry.ref.name, entry.req.request_id, False)

    def _place_job(self, ref: JobRef, data: bytes, rid: str | None) -> None:
        """The inbox file of a committed job: written in tmp/ and moved in (never replacing), no fsync."""
        tmp = self._write_tmp(data, "write job", durable=False)
        fault_point("enqueue.tmp_written")
        try:
            place(tmp, f"{self.dirs['inbox']}/{ref.file}")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            # The record is committed but cannot be placed: it must not be placed later by a rebuild either.
            self._cancel_enqueue(ref, rid)
            if isinstance(exc, FileExistsError):
                raise QueueError(f"job name {ref.name} drawn twice; nothing was queued, try again") from None
            if isinstance(exc, OSError):
                self._reraise("place job", exc)
            raise
        fault_point("enqueue.placed")

    def _cancel_enqueue(self, ref: JobRef, rid: str | None) -> None:
        """An ENQ record whose job is not acknowledged: UNENQ keeps it from answering a repeat of the request
        and from being placed by a rebuild."""
        record: dict[str, Any] = {"name": ref.name}
        if rid is not None:
            record["rid"] = rid
        self._log("UNENQ", **record)
        log.warning("job %s not queued: it could not be made durable", ref.name, extra=fields(job=ref.name))

    def _sync_placed(self, ref: JobRef, rid: str | None) -> None:
        """Without the WAL: the placed file's directory is fsynced; a failure takes the job back if it can."""
        self._count("ENQ")
        fault_point("enqueue.logged")
        try:
            fault_point("enqueue.sync")
            self._sync("inbox")
        except (QueueNotWritable, OSError) as exc:
            if self._take_back(ref, rid):
                if isinstance(exc, OSError):
                    self._reraise("fsync", exc)
                raise  # nothing was queued: the answer "not writable" is true
            raise QueuedNotDurable(ref.name, exc) from exc

    def _take_back(self, ref: JobRef, rid: str | None) -> bool:
        """Undo the placement of a job whose fsync failed; False when it is beyond recall (claimed already)."""
        try:
            os.unlink(os.path.join(self.dirs["inbox"], ref.file))
        except OSError as exc:
            log.error("job %s placed but not durable, and it cannot be taken back: %s", ref.name, exc)
            return False
        record: dict[str, Any] = {"name": ref.name}
        if rid is not None:
            record["rid"] = rid
        self._log("UNENQ", **record)  # the ENQ record before it must not answer a repeat of the request
        log.warning("job %s taken back: its fsync failed", ref.name, extra=fields(job=ref.name))
        return True

    def _answer_repeat(self, rid: str, req: Request, entry: DedupEntry) -> EnqueueResult:
        if not secrets.compare_digest(entry.sha256, req.sha256):
            raise DedupConflict(rid, entry.name)
        self._log("DEDUP", rid=rid, name=entry.name)
        log.debug("deduplicated", extra=fields(job=entry.name, request_id=rid))
        return EnqueueResult(entry.name, rid, True)

    def _write_job(self, req: Request, priority: int) -> JobRef:
        tmp = self._write_tmp(req.canonical, "write job")
        fault_point("enqueue.tmp_written")
        try:
            for _ in range(16):
                ref = self._names.next(priority, req.request_id)
                try:
                    place(tmp, os.path.join(self.dirs["inbox"], ref.file))
                except FileExistsError:
                    continue  # two enqueuers drew the same name: draw again, never replace
                fault_point("enqueue.placed")
                return ref
            raise QueueError("could not find a free job name after 16 tries")
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                self._reraise("place job", exc)
            raise

    def _adopt(self, file: str) -> None:
        """A file dropped into inbox/ by hand under another name becomes a job with a proper name."""
        src = os.path.join(self.dirs["inbox"], file)
        try:
            if not os.path.isfile(src) or os.path.islink(src):
                return
            ref = self._names.next(DEFAULT_PRIORITY, None)
            place(src, os.path.join(self.dirs["inbox"], ref.file))
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot adopt inbox/%s: %s", file, exc)
            return
        log.info("adopted inbox/%s as %s", file, ref.name, extra=fields(job=ref.name))
        self._log("ENQ", ts=ref.epoch_ms, name=ref.name, prio=ref.priority, adopted=file)
        self._inbox.push(ref.file)


class _Staged:
    """A job whose ENQ record is appended and not yet acknowledged: it pins its WAL segment (unsealed) and
    holds its request_id's dedup reservation until it is accepted or abandoned."""

    def __init__(self, req: Request, ref: JobRef, segment: str, reservation: Reservation | None) -> None:
        self.req = req
        self.ref = ref
        self.segment = segment
        self.reservation = reservation
        self.index = -1
        self._settled = False

    def accept(self, ops: EnqueueOps) -> None:
        """Placed: a repeat of the request is now told this job."""
        rid = self.req.request_id
        if self.reservation is not None and rid is not None:
            ops._dedup.finish(rid, self.reservation, self.ref.name, self.ref.epoch_ms)
        self.reservation = None
        ops._inbox.push(self.ref.file)
        if log.isEnabledFor(logging.DEBUG):  # a line nobody reads must not cost its fields on every enqueue
            log.debug("enqueued", extra=fields(job=self.ref.name, request_id=rid))
        self.settle(ops)

    def abandon(self, ops: EnqueueOps) -> None:
        """Not queued: a repeat of the request may queue it."""
        rid = self.req.request_id
        if self.reservation is not None and rid is not None:
            ops._dedup.abort(rid, self.reservation)
        self.reservation = None
        self.settle(ops)

    def settle(self, ops: EnqueueOps) -> None:
        if self._settled:
            return
        self._settled = True
        assert ops._writer is not None
        if self.reservation is not None and self.req.request_id is not None:
            # neither accepted nor abandoned (an exception went past): a copy must not wait for it
            ops._dedup.abort(self.req.request_id, self.reservation)
            self.reservation = None
        ops._writer.release(self.segment)

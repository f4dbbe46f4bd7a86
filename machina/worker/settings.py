"""The worker's knobs, read once from the configuration (OPERATIONS.md "Scan / retry knobs"; the queue
section of ``machina config show``)."""

from __future__ import annotations

from dataclasses import dataclass

from machina.config import Config

#: Longest a slot waits in one call (claim, child reply) before it looks at the stop flag and says it
#: is alive: the bound on how late a stop is noticed and the unit of the watchdog's progress check.
TICK_S = 0.5
#: Heartbeats of a claim: a quarter of MACHINA_CLAIM_TIMEOUT_MS, but at least this often.
HEARTBEAT_MAX_S = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4  #: MACHINA_WORKER_CONCURRENCY: job slots, each with its own child
    child_max_jobs: int = 10000  #: MACHINA_WORKER_CHILD_MAX_JOBS: recycle a child after this many (0 = never)
    job_timeout_ms: int = 300000  #: MACHINA_JOB_TIMEOUT_MS
    stop_grace_ms: int = 30000  #: MACHINA_WORKER_STOP_GRACE_MS
    claim_timeout_ms: int = 600000  #: MACHINA_CLAIM_TIMEOUT_MS

    @classmethod
    def from_config(cls, cfg: Config) -> WorkerSettings:
        return cls(
            concurrency=cfg["MACHINA_WORKER_CONCURRENCY"],
            child_max_jobs=cfg["MACHINA_WORKER_CHILD_MAX_JOBS"],
            job_timeout_ms=cfg["MACHINA_JOB_TIMEOUT_MS"],
            stop_grace_ms=cfg["MACHINA_WORKER_STOP_GRACE_MS"],
            claim_timeout_ms=cfg["MACHINA_CLAIM_TIMEOUT_MS"],
        )

    @property
    def pool_size(self) -> int:
        """Children kept alive: one per slot and a spare."""
        return self.concurrency + 1

    @property
    def heartbeat_s(self) -> float:
        return min(self.claim_timeout_ms / 4000, HEARTBEAT_MAX_S)

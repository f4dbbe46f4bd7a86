"""The worker's variables (queue section): a bad value is refused with its name, the value and what is
expected; WorkerSettings carries what was configured."""

from __future__ import annotations

import pytest

from machina import config
from machina.worker.settings import WorkerSettings

BAD_VALUES = [
    ("MACHINA_WORKER_CONCURRENCY", "0", "from 1 to 16"),
    ("MACHINA_WORKER_CONCURRENCY", "17", "from 1 to 16"),
    ("MACHINA_WORKER_CONCURRENCY", "two", "expected an integer"),
    ("MACHINA_WORKER_CHILD_MAX_JOBS", "-1", "from 0 to"),
    ("MACHINA_WORKER_CHILD_MAX_JOBS", "1k", "expected an integer"),
    ("MACHINA_WORKER_STOP_GRACE_MS", "-100", "from 0 to"),
    ("MACHINA_WORKER_STOP_GRACE_MS", "30s", "expected an integer in ms"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_bad_worker_values_name_the_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"MACHINA_ENV_FILE": "/dev/null", name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and expected in message


def test_worker_settings_follow_the_configuration() -> None:
    cfg = config.load(
        environ={
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_WORKER_CONCURRENCY": "4",
            "MACHINA_WORKER_CHILD_MAX_JOBS": "0",
            "MACHINA_WORKER_STOP_GRACE_MS": "500",
            "MACHINA_JOB_TIMEOUT_MS": "2000",
            "MACHINA_CLAIM_TIMEOUT_MS": "8000",
        }
    )
    settings = WorkerSettings.from_config(cfg)
    assert settings == WorkerSettings(
        concurrency=4, child_max_jobs=0, job_timeout_ms=2000, stop_grace_ms=500, claim_timeout_ms=8000
    )
    assert settings.pool_size == 5  # a spare child
    assert settings.heartbeat_s == 2.0  # a quarter of the claim timeout
    assert WorkerSettings.from_config(config.load(environ={"MACHINA_ENV_FILE": "/dev/null"})) == WorkerSettings()
    assert WorkerSettings().heartbeat_s == 30.0

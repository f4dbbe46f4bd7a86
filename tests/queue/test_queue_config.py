"""The queue section of the configuration: each variable rejects a bad value with a clear message, and
QueueConfig carries what was configured."""

from __future__ import annotations

import pytest

from machina import config
from machina.queue import QueueConfig

BAD_VALUES = [
    ("MACHINA_WAL_ENABLE", "maybe", "expected 0 or 1"),
    ("MACHINA_WAL_FSYNC", "2", "expected 0 or 1"),
    ("MACHINA_WAL_CRC32", "yes please", "expected 0 or 1"),
    ("MACHINA_WAL_CHECKPOINT_MS", "0", "from 1 to"),
    ("MACHINA_SERVE_SCAN_MS", "fast", "expected an integer"),
    ("MACHINA_RETRY_MIN_MS", "-5", "from 0 to"),
    ("MACHINA_RETRY_MAX_MS", "1e3", "expected an integer"),
    ("MACHINA_MAX_ATTEMPTS", "0", "from 1 to 1000"),
    ("MACHINA_DEDUP_TTL_MS", "-1", "from 0 to"),
    ("MACHINA_CLAIM_TIMEOUT_MS", "999", "from 1000 to"),
    ("MACHINA_JOB_TIMEOUT_MS", "10", "from 100 to"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_bad_queue_values_name_the_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"MACHINA_ENV_FILE": "/dev/null", name: value})
    message = str(caught.value)
    assert name in message and repr(value) in message and expected in message


def test_retry_min_above_max_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="MACHINA_RETRY_MIN_MS=5000 is larger than MACHINA_RETRY_MAX_MS=10"):
        config.load(
            environ={"MACHINA_ENV_FILE": "/dev/null", "MACHINA_RETRY_MIN_MS": "5000", "MACHINA_RETRY_MAX_MS": "10"}
        )


def test_queue_config_follows_the_configuration_and_the_prod_profile() -> None:
    cfg = config.load(
        environ={
            "MACHINA_ENV_FILE": "/dev/null",
            "MACHINA_PROFILE": "prod",
            "MACHINA_WAL_CRC32": "1",
            "MACHINA_MAX_ATTEMPTS": "7",
            "MACHINA_CLAIM_TIMEOUT_MS": "30000",
        }
    )
    qc = QueueConfig.from_config(cfg)
    assert qc.fsync is True  # the prod profile turns fsync on
    assert (qc.wal_crc32, qc.max_attempts, qc.claim_timeout_ms) == (True, 7, 30000)
    assert QueueConfig.from_config(config.load(environ={"MACHINA_ENV_FILE": "/dev/null"})) == QueueConfig()

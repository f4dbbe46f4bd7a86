"""The embed section of the configuration: defaults, and a clear error for a bad value of each variable."""

from __future__ import annotations

import tomllib

import pytest
from embed_support import CHECKOUT

from machina import config
from machina.config import ConfigError

BASE = {"MACHINA_ENV_FILE": "/dev/null"}


def test_defaults() -> None:
    cfg = config.load(environ=BASE)
    assert cfg["MACHINA_EMBED_PROVIDER"] == "hash" and cfg["MACHINA_GPU_DIM"] == 128
    assert cfg["MACHINA_EMBED_MIN_SCORE"] == 0.1 and cfg["MACHINA_EMBED_NOFILE"] == 256
    assert cfg["MACHINA_EMBED_ALLOWED_UIDS"] == ()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MACHINA_EMBED_NOFILE", "-1", "an integer from 0"),
        ("MACHINA_EMBED_MIN_SCORE", "1.5", "a number from -1.0 to 1.0"),
        ("MACHINA_EMBED_MIN_SCORE", "nan", "a number from -1.0 to 1.0"),
        ("MACHINA_EMBED_BATCH_MAX", "0", "an integer from 1"),
        ("MACHINA_EMBED_MAX_TEXTS", "many", "an integer from 1"),
        ("MACHINA_EMBED_MAX_CHARS", "8", "an integer in characters from 16"),
        ("MACHINA_EMBED_HISTORY", "-5", "an integer from 0"),
        ("MACHINA_EMBED_CACHE_ENTRIES", "1e6", "an integer from 0"),
        ("MACHINA_EMBED_ALLOWED_UIDS", "1000,bob", "a comma-separated list of uids"),
        ("MACHINA_EMBED_BREAKER_FAILURES", "1001", "an integer from 0 to 1000"),
        ("MACHINA_EMBED_BREAKER_COOLDOWN_MS", "soon", "an integer in ms from 0"),
        ("MACHINA_EMBED_PROVIDER", "model", "one of hash, cmd"),
        ("MACHINA_GPU_DIM", "1", "an integer from 2"),
    ],
)
def test_bad_values_name_the_variable_value_and_expectation(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(environ={**BASE, name: value})
    text = str(info.value)
    assert f"{name}={value!r}" in text and expected in text


def test_cmd_provider_needs_a_command() -> None:
    with pytest.raises(ConfigError, match="needs MACHINA_EMBED_CMD"):
        config.load(environ={**BASE, "MACHINA_EMBED_PROVIDER": "cmd"})


def test_model_extra_pins_what_setup_model_installs() -> None:
    """pyproject's `model` extra and tools/embed/requirements.txt must not drift apart (torch pinned in both)."""
    extra = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["model"]
    lines = (CHECKOUT / "tools" / "embed" / "requirements.txt").read_text().splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(extra) == sorted(required)
    assert "torch==2.13.0" in required

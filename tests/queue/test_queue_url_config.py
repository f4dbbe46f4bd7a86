"""MACHINA_QUEUE_URL chooses the queue's backend; it never carries a password, and an error about it never
shows one.  MACHINA_QUEUE_PASSWORD is a secret."""

from __future__ import annotations

import pytest

from machina import config
from machina.config.kinds import redact_url
from machina.queue import QueueConfig

SECRET = "s3cr3t-Pa55"


def _load(**env: str) -> config.Config:
    return config.load(environ={"MACHINA_ENV_FILE": "/dev/null", **env})


def test_unset_and_file_mean_the_file_queue() -> None:
    assert QueueConfig.from_config(_load()).url is None
    assert QueueConfig.from_config(_load(MACHINA_QUEUE_URL="file:")).url is None


def test_a_postgresql_url_is_carried_as_given() -> None:
    url = "postgresql://machina@db.example:5432/machina?sslmode=require"
    cfg = _load(MACHINA_QUEUE_URL=url, MACHINA_QUEUE_POOL_SIZE="8")
    assert (QueueConfig.from_config(cfg).url, QueueConfig.from_config(cfg).pool_size) == (url, 8)
    assert cfg.setting("MACHINA_QUEUE_URL").shown() == url


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://machina:{SECRET}@db.example/machina",
        f"postgres://machina:{SECRET}@db.example/machina",
        f"postgresql://db.example/machina?sslmode=require&password={SECRET}",
    ],
)
def test_a_password_in_the_url_is_refused_without_being_shown(url: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        _load(MACHINA_QUEUE_URL=url)
    message = str(caught.value)
    assert "MACHINA_QUEUE_URL" in message and "MACHINA_QUEUE_PASSWORD" in message
    assert SECRET not in message and "***" in message


@pytest.mark.parametrize("url", ["mysql://db/x", "db.example:5432", "postgresql://db/x y", "/var/lib/queue"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(config.ConfigError, match="expected file: or a postgresql:// URL"):
        _load(MACHINA_QUEUE_URL=url)


def test_the_password_variable_is_a_secret() -> None:
    cfg = _load(MACHINA_QUEUE_URL="postgresql://db.example/machina", MACHINA_QUEUE_PASSWORD=SECRET)
    assert cfg.setting("MACHINA_QUEUE_PASSWORD").shown() == "<set>"
    assert SECRET in cfg.secret_values()
    assert SECRET not in repr(QueueConfig.from_config(cfg))


def test_redact_url_hides_both_spellings_of_a_password() -> None:
    assert redact_url(f"postgresql://u:{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert redact_url(f"postgresql://h/db?a=1&password={SECRET}&b=2") == "postgresql://h/db?a=1&password=***&b=2"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"

from __future__ import annotations

from collections.abc import Iterator

import pytest

from machina.testing.telegram_api import FakeTelegram


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def scan_root(machina_root):  # type: ignore[no-untyped-def]
    """A root with data/app.log holding two ERROR lines."""
    data = machina_root / "data"
    data.mkdir(exist_ok=True)
    (data / "app.log").write_text("ok\nERROR disk full\nfine\nERROR again\n")
    return machina_root

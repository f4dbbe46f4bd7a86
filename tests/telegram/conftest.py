from __future__ import annotations

from collections.abc import Iterator

import pytest

from machina.testing.telegram_api import FakeTelegram


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake

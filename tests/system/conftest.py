from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.system.server import TallyProcess

API_KEY = "vb_live_test_system_key_0123456789abcdef"


@pytest.fixture
def tally(tmp_path: Path) -> Iterator[TallyProcess]:
    """A fresh server on its own data dir and free loopback port; stopped after the test."""
    process = TallyProcess(tmp_path / "data", api_key=API_KEY).start()
    try:
        yield process
    finally:
        process.kill()

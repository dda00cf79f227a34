"""wait_for: poll until a condition holds, a bounded number of times.

A bound on how long a test may wait for a real process, server or database (one that is slow on a
loaded machine), not an assertion about speed: when the condition never holds, the test fails
naming what never happened and the last value seen, never how long anything took.

    wait_for(lambda: get_health(url), what="node n1 serving", until=lambda h: h == (200, OK))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")
POLL_INTERVAL_S = 0.05


def wait_for(probe: Callable[[], T], *, what: str, within_s: float, until: Callable[[T], bool] = bool) -> T:
    """Call `probe` every POLL_INTERVAL_S until `until(value)` holds (by default: the value is
    truthy); return that value. After about `within_s`, fail the test: "never happened: what"."""
    value = probe()
    for _ in range(max(1, round(within_s / POLL_INTERVAL_S))):
        if until(value):
            return value
        time.sleep(POLL_INTERVAL_S)
        value = probe()
    if until(value):
        return value
    pytest.fail(f"never happened: {what} (last seen: {value!r})")

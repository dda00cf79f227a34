"""Stamps for commands: the wall clock, never going backwards (CONTRACT §3.16, §6).

The runtime stamps a command where it gets its LSN (on its shard, just before `apply`), so stamps
are monotonic in log order; `engine.core.ledger.apply` asserts it. After a restart the stamper
starts from the newest stamp in the log, so a wall clock set back cannot reorder history.
"""

from __future__ import annotations

import time
from typing import Callable


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Stamper:
    """`stamp()` -> UTC ms: max(clock, previous stamp)."""

    __slots__ = ("_clock", "_stamp_ms_last")

    def __init__(self, clock: Callable[[], int], stamp_ms_last: int) -> None:
        self._clock = clock
        self._stamp_ms_last = stamp_ms_last

    def stamp(self) -> int:
        stamp_ms = self._clock()
        if stamp_ms < self._stamp_ms_last:
            return self._stamp_ms_last
        self._stamp_ms_last = stamp_ms
        return stamp_ms

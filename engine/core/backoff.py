"""Exponential backoff: the wait before the next attempt after consecutive failures.

Pure arithmetic, one shape for both retry loops: the webhook delivery schedule decided by the core
(engine/core/hooks.py `backoff_ms`, CONTRACT §11.3: 1 s, 2 s, 4 s ... capped at 1 h) and the
snapshot loop's retries (engine/runtime/snapshots.py: 2 s, 4 s ... capped at 300 s).
"""

from __future__ import annotations

from typing import TypeVar

N = TypeVar("N", int, float)  # ints stay ints (ms in the log), floats stay floats (seconds to sleep)


def backoff(failures: int, first: N, cap: N) -> N:
    """`first` after one failure, doubled after each further one, never above `cap`:
    min(first * 2**(failures - 1), cap), in the unit of `first` and `cap`. Doubling is exact
    for ints and (powers of two) for floats. Needs failures >= 1 and 0 < first <= cap (asserted)."""
    assert failures >= 1, failures
    assert 0 < first <= cap, (first, cap)
    delay = first
    for _ in range(failures - 1):  # stops at the cap: at most log2(cap / first) + 1 rounds
        if delay >= cap:
            break
        delay = delay * 2
    return min(delay, cap)

"""engine/core/backoff.py: the one exponential backoff of the webhook schedule and the snapshot loop.

What: the waits after 1, 2, ... failures for int (ms) and float (s) units, the cap, very many
failures, and the refusal of a nonsensical call; the two callers' schedules through them.
How: exact values (doubling is exact for ints and for floats from a power-of-two multiple).
How it could fail: an off-by-one in the exponent (the first wait doubled or skipped), a cap
passed, a float where the log needs an int (the WebhookAttempt's next_at_ms is in the digest).
"""

from __future__ import annotations

import pytest

from engine.core.backoff import backoff
from engine.core.hooks import backoff_ms
from engine.runtime import snapshots


def test_doubles_from_first_to_the_cap() -> None:
    assert [backoff(n, 3, 40) for n in range(1, 8)] == [3, 6, 12, 24, 40, 40, 40]
    assert [backoff(n, 0.5, 5.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff(1, 7, 7) == 7


def test_units_are_kept() -> None:
    assert type(backoff(3, 1000, 3_600_000)) is int
    assert type(backoff(3, 1.0, 300.0)) is float
    assert type(backoff(10_000, 1000, 3_600_000)) is int


def test_many_failures_stay_at_the_cap() -> None:
    assert backoff(10**9, 1, 2**62) == 2**62  # stops doubling at the cap: no 10^9 rounds
    assert backoff(10**9, 0.001, 300.0) == 300.0


@pytest.mark.parametrize(("failures", "first", "cap"), [(0, 1, 10), (-1, 1, 10), (1, 0, 10), (1, 11, 10)])
def test_a_call_that_only_a_bug_makes_is_asserted(failures: int, first: int, cap: int) -> None:
    with pytest.raises(AssertionError):
        backoff(failures, first, cap)


def test_the_two_schedules() -> None:
    """Webhooks: 1 s doubling to 1 h (CONTRACT §11.3); snapshots: twice the 1 s poll, to 300 s."""
    assert [backoff_ms(n) for n in (1, 2, 12, 13, 99)] == [1000, 2000, 2_048_000, 3_600_000, 3_600_000]
    first_s = 2 * snapshots.SNAPSHOT_POLL_INTERVAL_S
    schedule = [backoff(n, first_s, snapshots.SNAPSHOT_RETRY_INTERVAL_S_MAX) for n in range(1, 11)]
    assert schedule == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0]

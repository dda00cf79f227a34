"""The bucket-owner index rebuilt after a snapshot load (engine.core.state._sorted_owners).

What: the three ways it is built (input already in lsn order; dense lsns through a table;
sparse lsns by sorting positions) give the same index as a plain sort of (lsn, owner) pairs.
How: direct calls on made-up inputs shaped like restored customers (interleaved rounds).
How it could fail: an owner moved to another lsn, a bucket lost, or lsns out of order.
"""

from __future__ import annotations

import pytest

from engine.core.state import _sorted_owners


def _rounds(customers: int, rounds: int, step: int) -> tuple[list[int], list[str]]:
    """Customer c's bucket of round r at lsn 3 + step * (r * customers + c), in customer order."""
    lsns, owners = [], []
    for c in range(customers):
        for r in range(rounds):
            lsns.append(3 + step * (r * customers + c))
            owners.append(f"m-{c}")
    return lsns, owners


@pytest.mark.parametrize(
    ("lsns", "owners"),
    [
        ([3, 4, 9], ["a", "b", "a"]),  # in order already
        _rounds(50, 4, 1),  # dense: every lsn a bucket
        _rounds(50, 4, 3),  # dense enough: a third of the lsns
        _rounds(50, 4, 7),  # sparse: sorted by position
        ([], []),
    ],
)
def test_sorted_owners_matches_a_plain_sort(lsns: list[int], owners: list[str]) -> None:
    expected = sorted(zip(lsns, owners))
    ordered, ordered_owners = _sorted_owners(list(lsns), list(owners))
    assert list(zip(ordered, ordered_owners)) == expected
    assert ordered.typecode == "q"

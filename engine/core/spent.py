"""The index of spent buckets (CONTRACT §7.11: the cost of an operation on a customer must not
grow with the spent or expired buckets it once had).

An *open* bucket (not expired, not voided) is in exactly one of two derived places:

- `CustomerState.live`: it still holds credit (available + frozen > 0), in §3.6 allocation
  order. Debits, expiry and the balance view's `accounts` walk only this list.
- `CustomerState.spent` (a `SpentIndex`): it holds none (used == total). It still counts in the
  balance view (`total` and `used` of its wallet and source, CONTRACT §3.13, while valid now), so
  the index keeps, per (wallet, source), a running total and the orders the view needs (oldest
  bucket, soonest expiry, earliest start), each a SortedKeyList: O(log n) to add or remove.

A closed bucket is in neither. Every write that can move a bucket across the line calls
`reindex` (debit, consume, refund) or `close` (expiry, void). Derived only: rebuilt on load by
`state.rebuild_derived`, never encoded or hashed (snapshot bytes and digests do not change).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, NamedTuple

from sortedcontainers import SortedKeyList

if TYPE_CHECKING:
    from engine.core.state import Bucket, CustomerState


def _lsn(bucket: Bucket) -> int:
    return bucket.lsn


def _expiry(bucket: Bucket) -> tuple[int, int]:
    assert bucket.expires_at_ms is not None
    return (bucket.expires_at_ms, bucket.lsn)


def _start(bucket: Bucket) -> tuple[int, int]:
    assert bucket.starts_at_ms is not None
    return (bucket.starts_at_ms, bucket.lsn)


def _alloc_key(bucket: Bucket) -> tuple[int, int, int]:
    # Same as state.allocation_key (CONTRACT §3.6); repeated here so this module needs no import
    # of state at run time (state imports this one).
    if bucket.expires_at_ms is None:
        return (1, 0, bucket.lsn)
    return (0, bucket.expires_at_ms, bucket.lsn)


class SpentGroup:
    """The spent open buckets of one (wallet, source)."""

    __slots__ = ("total", "by_lsn", "by_expiry", "by_start", "starts_none")

    def __init__(self) -> None:
        self.total = 0  # sum of their totals (== their used: nothing available or frozen)
        self.by_lsn: SortedKeyList[Bucket, int] = SortedKeyList(key=_lsn)
        self.by_expiry: SortedKeyList[Bucket, tuple[int, int]] = SortedKeyList(key=_expiry)  # with an expires_at
        self.by_start: SortedKeyList[Bucket, tuple[int, int]] = SortedKeyList(key=_start)  # with a starts_at
        self.starts_none = 0  # how many have no starts_at


class SpentIndex:
    __slots__ = ("groups", "expiring", "starting", "count")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], SpentGroup] = {}
        self.expiring: SortedKeyList[Bucket, tuple[int, int]] = SortedKeyList(key=_expiry)  # all groups': expiry
        self.starting: SortedKeyList[Bucket, tuple[int, int]] = SortedKeyList(key=_start)  # all groups': the view
        self.count = 0


class SpentTotals(NamedTuple):
    """One (wallet, source)'s spent buckets valid at some instant, as the balance view needs."""

    lsn_min: int
    total: int  # == used
    starts_none: bool  # some bucket has no starts_at
    starts_min: int | None  # the earliest starts_at among those that have one
    expires_min: int | None  # the soonest expires_at


def add(customer: CustomerState, bucket: Bucket) -> None:
    assert not bucket.is_expired and bucket.total - bucket.used - bucket.expired == 0, bucket
    if customer.spent is None:
        customer.spent = SpentIndex()
    index: SpentIndex = customer.spent
    group = index.groups.get((bucket.wallet, bucket.source))
    if group is None:
        group = index.groups[(bucket.wallet, bucket.source)] = SpentGroup()
    group.total += bucket.total
    group.by_lsn.add(bucket)
    if bucket.expires_at_ms is not None:
        group.by_expiry.add(bucket)
        index.expiring.add(bucket)
    if bucket.starts_at_ms is None:
        group.starts_none += 1
    else:
        group.by_start.add(bucket)
        index.starting.add(bucket)
    index.count += 1


def remove(customer: CustomerState, bucket: Bucket) -> None:
    """Take `bucket` out of the index (it must be there): O(log n)."""
    index = customer.spent
    assert index is not None
    key = (bucket.wallet, bucket.source)
    group = index.groups[key]
    group.total -= bucket.total
    group.by_lsn.remove(bucket)
    if bucket.expires_at_ms is not None:
        group.by_expiry.remove(bucket)
        index.expiring.remove(bucket)
    if bucket.starts_at_ms is None:
        group.starts_none -= 1
    else:
        group.by_start.remove(bucket)
        index.starting.remove(bucket)
    index.count -= 1
    assert group.total >= 0 and index.count >= 0
    if not group.by_lsn:
        assert group.total == 0 and group.starts_none == 0
        del index.groups[key]
    if index.count == 0:
        customer.spent = None  # a customer with no spent bucket pays nothing for the index


def _live_position(customer: CustomerState, bucket: Bucket) -> tuple[int, bool]:
    live = customer.live
    i = bisect_left(live, _alloc_key(bucket), key=_alloc_key)
    return i, i < len(live) and live[i] is bucket


def reindex(customer: CustomerState, bucket: Bucket) -> None:
    """After a write to an open `bucket`: keep it in `live` iff it holds credit, else in the
    spent index. O(log n) + one list insert/delete in `live` (bounded by buckets holding credit).
    A closed bucket is left alone: `close` took it out of both."""
    if bucket.is_expired:
        return
    holds = bucket.total - bucket.used - bucket.expired > 0  # available + frozen
    i, present = _live_position(customer, bucket)
    if holds and not present:
        remove(customer, bucket)  # a refund gave credit back to a spent bucket
        customer.live_list().insert(i, bucket)
    elif not holds and present:
        del customer.live_list()[i]
        add(customer, bucket)


def close(customer: CustomerState, bucket: Bucket) -> None:
    """`bucket` was just closed (expired or voided): it leaves `live` or the spent index."""
    assert bucket.is_expired
    i, present = _live_position(customer, bucket)
    if present:
        del customer.live_list()[i]
    else:
        remove(customer, bucket)
    customer.open_total -= bucket.total
    assert customer.open_total >= 0


def expiring_by(customer: CustomerState, at_ms: int) -> list[Bucket]:
    """The spent open buckets with expires_at <= at_ms (to be closed by ExpireBuckets)."""
    index: SpentIndex | None = customer.spent
    found: list[Bucket] = []
    if index is None:
        return found
    for bucket in index.expiring:  # expiry order: stops at the first one not due
        if _expiry(bucket)[0] > at_ms:
            break
        found.append(bucket)
    return found


def valid_totals(customer: CustomerState, now_ms: int) -> dict[tuple[str, str], SpentTotals]:
    """Per (wallet, source), the spent buckets valid at `now_ms` (CONTRACT §3.5: started, not
    past expiry). Work: O(groups + invalid ones), where the invalid ones are spent buckets past
    their expiry whose timer has not fired yet (none once the runtime applied the customer's due
    timers, CONTRACT §7.3) or not started (impossible after a debit stamped at or before now)."""
    index: SpentIndex | None = customer.spent
    if index is None:
        return {}
    invalid: dict[int, Bucket] = {}
    for bucket in index.expiring:
        if _expiry(bucket)[0] > now_ms:
            break
        invalid[bucket.lsn] = bucket
    for bucket in reversed(index.starting):
        if _start(bucket)[0] <= now_ms:
            break
        invalid[bucket.lsn] = bucket
    out: dict[tuple[str, str], SpentTotals] = {}
    for key, group in index.groups.items():
        totals = _group_totals(group, invalid)
        if totals is not None:
            out[key] = totals
    return out


def _group_totals(group: SpentGroup, invalid: dict[int, Bucket]) -> SpentTotals | None:
    total = group.total
    starts_none = group.starts_none
    for bucket in invalid.values():  # bounded by the invalid ones (see valid_totals)
        if bucket in group.by_lsn:
            total -= bucket.total
            starts_none -= bucket.starts_at_ms is None
    if total == 0:
        return None  # every bucket of the group is invalid now (totals are >= 1 each)
    lsn_min = next(b.lsn for b in group.by_lsn if b.lsn not in invalid)
    expires = next((b.expires_at_ms for b in group.by_expiry if b.lsn not in invalid), None)
    starts = next((b.starts_at_ms for b in group.by_start if b.lsn not in invalid), None)
    return SpentTotals(lsn_min, total, starts_none > 0, starts, expires)

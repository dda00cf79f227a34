"""check_invariants(state): the money rules every state must satisfy, for `tally verify` and tests.

Checked per bucket, from two independent sides (the bucket's counters and the ledger entries):

    total     == sum of its GRANT entries          (a bucket is one deposit, CONTRACT §3.5)
    used      == sum of its CONSUME entries
    expired   == sum of its EXPIRE entries
    frozen    == sum of the open (FROZEN) freeze allocations on it
    available == total - used - frozen - expired >= 0, and 0 once the bucket is expired
    every counter >= 0 and <= 2^53 - 1 (CONTRACT §3.1)

and per slot pool (CONTRACT §8.2, §8.3), from its holdings and from its events:

    in_use   == sum of its holdings <= capacity, both >= 0
    capacity == GRANT_CAPACITY - REVOKE_CAPACITY events; in_use == CLAIM - RELEASE events

Returns a list of human-readable problems (empty when sound). Pure: reads the state only.
"""

from __future__ import annotations

from collections import defaultdict

from engine.core.limits import AMOUNT_MAX
from engine.core.state import (
    CLAIM,
    CONSUME,
    EXPIRE,
    FROZEN,
    GRANT,
    GRANT_CAPACITY,
    RELEASE,
    REVOKE_CAPACITY,
    CustomerState,
    FreezeRecord,
    LedgerState,
    entry_id,
    pool_id,
)


def check_invariants(state: LedgerState) -> list[str]:
    problems: list[str] = []
    for project in state.projects.values():
        for customer in project.customers.values():
            where = f"project={project.name!r} customer={customer.customer_id!r}"
            problems.extend(f"{where} {p}" for p in _check_customer(customer))
            problems.extend(f"{where} {p}" for p in _check_slots(customer))
            if customer.last_lsn > state.last_lsn:
                problems.append(f"{where} last_lsn {customer.last_lsn} > ledger last_lsn {state.last_lsn}")
    return problems


def _check_customer(customer: CustomerState) -> list[str]:
    sums: dict[tuple[str, int], int] = defaultdict(int)
    previous = (0, -1)
    problems = []
    for entry in customer.entries:
        sums[(entry.op, entry.bucket_lsn)] += entry.amount
        if entry.amount <= 0:
            problems.append(f"entry {entry_id(entry.lsn, entry.i)} has amount {entry.amount}")
        if (entry.lsn, entry.i) <= previous:
            problems.append(f"entry {entry_id(entry.lsn, entry.i)} out of (lsn, i) order")
        previous = (entry.lsn, entry.i)
    frozen: dict[int, int] = defaultdict(int)
    for record in (customer.txns or {}).values():
        if isinstance(record, FreezeRecord) and record.status == FROZEN:
            for bucket_lsn, amount in record.allocation:
                frozen[bucket_lsn] += amount
    for bucket in customer.buckets:
        name = bucket.account_id
        expected = {
            "total": sums[(GRANT, bucket.lsn)],
            "used": sums[(CONSUME, bucket.lsn)],
            "expired": sums[(EXPIRE, bucket.lsn)],
            "frozen": frozen[bucket.lsn],
        }
        for field, value in expected.items():
            actual = getattr(bucket, field)
            if actual != value:
                problems.append(f"{name} {field}={actual} but the ledger says {value}")
            if not 0 <= actual <= AMOUNT_MAX:
                problems.append(f"{name} {field}={actual} out of range")
        if bucket.available < 0:
            problems.append(f"{name} available={bucket.available} is negative")
        if bucket.is_expired and bucket.available != 0:
            problems.append(f"{name} is expired but has available={bucket.available}")
    return problems


_SIGN = {GRANT_CAPACITY: (1, 0), REVOKE_CAPACITY: (-1, 0), CLAIM: (0, 1), RELEASE: (0, -1)}


def _check_slots(customer: CustomerState) -> list[str]:
    from_events: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for event in customer.slot_events or ():
        capacity_sign, in_use_sign = _SIGN[event.type]
        sums = from_events[(event.wallet, event.source)]
        sums[0] += capacity_sign * event.amount
        sums[1] += in_use_sign * event.amount
    problems = []
    for pool in customer.slot_pools or ():
        name = pool_id(pool.lsn)
        held = sum(h.amount for h in (pool.holdings or {}).values())
        if not 0 <= pool.in_use == held <= pool.capacity <= AMOUNT_MAX:
            problems.append(f"{name} in_use={pool.in_use} holdings={held} capacity={pool.capacity}")
        if from_events[(pool.wallet, pool.source)] != [pool.capacity, pool.in_use]:
            problems.append(f"{name} capacity/in_use {pool.capacity}/{pool.in_use} but the events say "
                            f"{from_events[(pool.wallet, pool.source)]}")  # fmt: skip
    return problems

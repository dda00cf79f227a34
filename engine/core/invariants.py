"""check_invariants(state): the money rules every state must satisfy, for `tally verify` and tests.

Checked per bucket, from two independent sides (the bucket's counters and the ledger entries):

    total     == sum of its GRANT entries          (a bucket is one deposit, CONTRACT §3.5)
    used      == sum of its CONSUME entries
    expired   == sum of its EXPIRE entries
    frozen    == sum of the open (FROZEN) freeze allocations on it
    available == total - used - frozen - expired >= 0, and 0 once the bucket is expired
    every counter >= 0 and <= 2^53 - 1 (CONTRACT §3.1)

Returns a list of human-readable problems (empty when sound). Pure: reads the state only.
"""

from __future__ import annotations

from collections import defaultdict

from engine.core.limits import AMOUNT_MAX
from engine.core.state import (
    CONSUME,
    EXPIRE,
    FROZEN,
    GRANT,
    CustomerState,
    FreezeRecord,
    LedgerState,
    entry_id,
)


def check_invariants(state: LedgerState) -> list[str]:
    problems: list[str] = []
    for project in state.projects.values():
        for customer in project.customers.values():
            where = f"project={project.name!r} customer={customer.customer_id!r}"
            problems.extend(f"{where} {p}" for p in _check_customer(customer))
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

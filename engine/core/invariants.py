"""check_invariants(state): the money rules every state must satisfy, for `tally verify` and tests.

Checked per bucket, from two independent sides (the bucket's counters and the ledger entries):

    total     == sum of its GRANT entries          (a bucket is one deposit, CONTRACT §3.5)
    used      == sum of its CONSUME entries - sum of its REFUND entries (CONTRACT §10.4)
    expired   == sum of its EXPIRE entries + sum of its VOID entries (written off)
    frozen    == sum of the open (FROZEN) freeze allocations on it (and the open freezes are
                 exactly those in ProjectState.open_freezes, LSN order)
    available == total - used - frozen - expired >= 0, and 0 once the bucket is closed
    every counter >= 0 and <= 2^53 - 1 (CONTRACT §3.1)

and per charge (CONTRACT §10.1): what its refunds gave back == what its REFUND entries say, and
never more than it charged; a voided bucket is closed. And per slot pool (CONTRACT §8.2, §8.3),
from its holdings and from its events:

    in_use   == sum of its holdings <= capacity, both >= 0
    capacity == GRANT_CAPACITY - REVOKE_CAPACITY events; in_use == CLAIM - RELEASE events

Returns a list of human-readable problems (empty when sound). Pure: reads the state only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from engine.core.limits import AMOUNT_MAX
from engine.core.state import (
    CLAIM,
    CONSUME,
    CONSUMED,
    EXPIRE,
    FROZEN,
    GRANT,
    REFUND,
    VOID,
    GRANT_CAPACITY,
    RELEASE,
    REVOKE_CAPACITY,
    CustomerState,
    allocation_key,
    DeductRecord,
    FreezeRecord,
    LedgerState,
    ProjectState,
    account_id,
    entry_id,
    pool_id,
)


def check_invariants(state: LedgerState) -> list[str]:
    problems: list[str] = []
    for project in state.projects.values():
        if list(project.customer_ids) != sorted(project.customers):  # the customer list's index
            problems.append(f"project={project.name!r} customer index != its customers")
        if not set(project.open_freezes) <= set(project.customers):
            problems.append(f"project={project.name!r} open-freeze index names an unknown customer")
        problems.extend(f"project={project.name!r} {p}" for p in _check_deposit_index(project))
        for customer in project.customers.values():
            where = f"project={project.name!r} customer={customer.customer_id!r}"
            problems.extend(f"{where} {p}" for p in _check_customer(customer))
            problems.extend(f"{where} {p}" for p in _check_slots(customer))
            problems.extend(f"{where} {p}" for p in _check_open_freezes(project.open_freezes.get(customer.customer_id), customer))
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
            "used": sums[(CONSUME, bucket.lsn)] - sums[(REFUND, bucket.lsn)],
            "expired": sums[(EXPIRE, bucket.lsn)] + sums[(VOID, bucket.lsn)],
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
    problems.extend(_check_corrections(customer))
    problems.extend(check_bucket_index(customer))
    return problems


def _check_deposit_index(project: ProjectState) -> list[str]:
    """The derived idempotency index (ProjectState.deposit_records, CONTRACT §3.9) holds exactly
    the customers' keyed deposits (the same objects), each naming a bucket of its customer with
    the deposit's amount; a customer's keyed deposits are in first-use (lsn) order.
    A cold customer's keys (engine/core/cold.py) name its id instead of the records, and every
    transaction id of a customer names it in `txn_owner`."""
    problems = []
    count = 0
    for customer in project.customers.values():
        records = customer.deposits
        count += len(records)
        if any(a.lsn >= b.lsn for a, b in zip(records, records[1:])):
            problems.append(f"customer={customer.customer_id!r} keyed deposits out of lsn order")
        cold = project.customers.is_cold(customer.customer_id)
        if any(project.txn_owner.get(txn) != customer.customer_id for txn in customer.txns or ()):
            problems.append(f"customer={customer.customer_id!r} transaction index lacks one of its ids")
        for record in records:
            indexed = project.deposit_records.get(record.idempotency_key)
            if (indexed != customer.customer_id) if cold else (indexed is not record):
                problems.append(f"deposit index lacks the key {record.idempotency_key!r}")
            elif project.bucket_owner(record.lsn) != customer.customer_id or not _has_bucket(customer, record.lsn, record.amount):
                problems.append(f"deposit {record.idempotency_key!r} does not match its bucket {account_id(record.lsn)}")
    if count != len(project.deposit_records):
        problems.append(f"deposit index holds {len(project.deposit_records)} keys, the customers {count}")
    return problems


def _has_bucket(customer: CustomerState, lsn: int, total: int) -> bool:
    buckets = customer.buckets
    i = bisect_left(buckets, lsn, key=lambda bucket: bucket.lsn)
    return i < len(buckets) and buckets[i].lsn == lsn and buckets[i].total == total


def _check_open_freezes(index: dict[str, FreezeRecord] | None, customer: CustomerState) -> list[str]:
    """The derived open-freeze index (ProjectState.open_freezes) holds exactly the customer's
    FROZEN freezes, in freeze LSN order, and no empty entry."""
    frozen = sorted((r for r in (customer.txns or {}).values() if isinstance(r, FreezeRecord) and r.status == FROZEN),
                    key=lambda r: r.lsn)  # fmt: skip
    indexed = [] if index is None else list(index.values())
    if index is not None and not index:
        return ["open-freeze index holds an empty entry"]
    if [r.transaction_id for r in indexed] != [r.transaction_id for r in frozen] or any(
        a is not b for a, b in zip(indexed, frozen)
    ):
        return ["open-freeze index != the FROZEN freezes in LSN order"]
    return []


def check_bucket_index(customer: CustomerState) -> list[str]:
    """The derived bucket indexes (engine/core/spent.py, CONTRACT §7.11) agree with the buckets:
    `live` = open buckets holding credit in §3.6 order, the spent index = the other open ones,
    `open_total` = the sum of open totals. O(buckets): for `tally verify` and tests only."""
    problems = []
    open_buckets = [b for b in customer.buckets if not b.is_expired]
    holding = sorted((b for b in open_buckets if b.total - b.used - b.expired > 0), key=allocation_key)
    if [b.lsn for b in customer.live] != [b.lsn for b in holding]:
        problems.append("live buckets differ from the open buckets holding credit")
    spent_lsns = sorted(b.lsn for b in open_buckets if b.total - b.used - b.expired == 0)
    index = customer.spent
    indexed = [] if index is None else sorted(b.lsn for g in index.groups.values() for b in g.by_lsn)
    if indexed != spent_lsns:
        problems.append(f"spent index holds {indexed[:5]}... but spent open buckets are {spent_lsns[:5]}...")
    if index is not None:
        for (wallet, source), group in index.groups.items():
            if group.total != sum(b.total for b in group.by_lsn if (b.wallet, b.source) == (wallet, source)):
                problems.append(f"spent group {wallet!r}/{source!r} total {group.total} is off")
    if customer.open_total != sum(b.total for b in open_buckets):
        problems.append(f"open_total {customer.open_total} != the sum of open bucket totals")
    return problems


def _check_corrections(customer: CustomerState) -> list[str]:
    """Refunds never exceed their charge and match their entries; voided buckets are closed."""
    problems = []
    by_txn: dict[str, int] = defaultdict(int)
    for refund in (customer.refunds or {}).values():
        by_txn[refund.transaction_id] += refund.amount
        if refund.amount != sum(amount for _, amount in refund.parts) or refund.amount <= 0:
            problems.append(f"refund {refund.refund_id!r} parts do not add up to {refund.amount}")
    entries: dict[str, int] = defaultdict(int)
    for entry in customer.entries:
        if entry.op == REFUND and entry.transaction_id is not None:
            entries[entry.transaction_id] += entry.amount
    for transaction_id, refunded in by_txn.items():
        record = (customer.txns or {}).get(transaction_id)
        charged = record.amount if isinstance(record, DeductRecord) else 0
        if isinstance(record, FreezeRecord) and record.status == CONSUMED:
            charged = record.consumed_amount
        if refunded > charged:
            problems.append(f"transaction {transaction_id!r} refunded {refunded} > charged {charged}")
        if entries[transaction_id] != refunded or (customer.refunded or {}).get(transaction_id) != refunded:
            problems.append(f"transaction {transaction_id!r} refund records, entries and index disagree")
    for void in (customer.voids or {}).values():
        if not customer.bucket_by_lsn(void.bucket_lsn).is_expired:
            problems.append(f"void {void.void_id!r}: its bucket is not closed")
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

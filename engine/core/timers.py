"""Timers (CONTRACT §3.10, §3.11, §6, §8.3): bucket expiry, freeze TTLs and slot claim TTLs as
logged commands (the slot release itself lives in engine/core/slots.py), and the due index the
runtime polls (`due_commands`, `next_due_ms`, `pop_due_customers`).
"""

from __future__ import annotations

import heapq

from engine.core.commands import (
    AutoSettle,
    ExpireBuckets,
    SlotAutoRelease,
)
from engine.core import spent
from engine.core.common import NOT_LOGGED, commit, entry, find_customer
from engine.core.results import (
    Applied,
    Rejected,
)
from engine.core.settlement import settle_consume, settle_unfreeze
from engine.core.slots import holding_is_live
from engine.core.state import (
    DUE_EXPIRE,
    DUE_SLOT_RELEASE,
    EXPIRE,
    FROZEN,
    CustomerState,
    FreezeRecord,
    LedgerState,
)

# -- timers (CONTRACT §3.10, §3.11, §6) -----------------------------------------------------------


def apply_expire_buckets(state: LedgerState, lsn: int, command: ExpireBuckets) -> Applied:
    """Close every open bucket with expires_at <= at_ms: one EXPIRE entry for its unspent,
    unfrozen remainder, created at its expires_at; exactly once (the bucket leaves `live`, or the
    spent index for a spent one: no entry, nothing left to write off). Work: the buckets closed."""
    customer = find_customer(state, command.project, command.customer_id)
    if customer is None:
        return NOT_LOGGED
    live = customer.live
    count = 0
    while count < len(live):  # `live` is in §3.6 order: every expiring bucket is in front
        expires_at_ms = live[count].expires_at_ms
        if expires_at_ms is None or expires_at_ms > command.at_ms:
            break
        count += 1
    spent_due = spent.expiring_by(customer, command.at_ms)
    if count == 0 and not spent_due:
        return NOT_LOGGED
    i = 0
    for bucket in live[:count]:
        assert bucket.expires_at_ms is not None and not bucket.is_expired
        remainder = bucket.total - bucket.used - bucket.frozen - bucket.expired
        assert remainder >= 0
        bucket.is_expired = True
        if remainder > 0:
            bucket.expired += remainder
            customer.add_entry(entry(lsn, i, EXPIRE, bucket, remainder, None, "UNDEFINED", None, bucket.expires_at_ms))
            i += 1
        customer.open_total -= bucket.total
    if count:
        del customer.live_list()[:count]
    for bucket in spent_due:  # lsn order among equal expiry: no entries, so order is moot
        bucket.is_expired = True
        spent.close(customer, bucket)
    assert customer.open_total >= 0
    commit(state, customer, lsn)
    return Applied(None, True)


def apply_auto_settle(state: LedgerState, lsn: int, command: AutoSettle) -> Applied | Rejected:
    """CONTRACT §3.10: at its due time a still-FROZEN freeze is unfrozen or fully consumed,
    exactly once. Anything else (settled meanwhile, not due) is a no-op: Applied(None, False)."""
    customer = find_customer(state, command.project, command.customer_id)
    record = None if customer is None or customer.txns is None else customer.txns.get(command.transaction_id)
    if not isinstance(record, FreezeRecord) or record.status != FROZEN:
        return NOT_LOGGED
    assert customer is not None
    if record.unfreeze_after_ms is not None:
        if command.at_ms < record.unfreeze_after_ms:
            return NOT_LOGGED
        return settle_unfreeze(state, lsn, command.project, customer, record, command.at_ms, True)
    if record.consume_after_ms is None or command.at_ms < record.consume_after_ms:
        return NOT_LOGGED
    result = settle_consume(state, lsn, command.project, customer, record, command.at_ms, record.amount, True)
    assert type(result) is Applied  # no overage: the full frozen amount is always there
    return result


def _due_is_live(customer: CustomerState, due: tuple[int, int, int, str | None]) -> bool:
    if due[1] == DUE_EXPIRE:
        return not customer.bucket_by_lsn(due[2]).is_expired
    if due[1] == DUE_SLOT_RELEASE:
        return holding_is_live(customer, due[2])
    assert customer.txns is not None and due[3] is not None
    record = customer.txns[due[3]]
    assert isinstance(record, FreezeRecord)
    return record.status == FROZEN


def _customer_next_due_ms(customer: CustomerState) -> int | None:
    """Drop dead timers off the top of the customer's heap (lazy deletion); the first live one."""
    due = customer.due
    while due:
        if _due_is_live(customer, due[0]):
            return due[0][0]
        heapq.heappop(due)
    customer.due = None
    return None


def due_commands(
    state: LedgerState, project: str, customer_id: str, now_ms: int
) -> list[ExpireBuckets | AutoSettle | SlotAutoRelease]:
    """The customer's timers due at or before `now_ms`, in due order, each stamped with its due
    time (CONTRACT §6, §7.3). Each one, applied in order, changes state (logged=True)."""
    project_state = state.projects.get(project)  # find_customer, written out: once per write
    customer = None if project_state is None else project_state.customers.get(customer_id)
    if customer is None or customer.due is None:  # no timer at all: the common case
        return []
    next_ms = _customer_next_due_ms(customer)
    if next_ms is None or next_ms > now_ms:
        return []
    assert customer.due is not None
    commands: list[ExpireBuckets | AutoSettle | SlotAutoRelease] = []
    expire_ms_last = None
    for due in sorted(d for d in customer.due if d[0] <= now_ms):  # bounded by the heap size
        if not _due_is_live(customer, due):
            continue
        due_ms, kind, due_lsn, transaction_id = due
        if kind == DUE_SLOT_RELEASE:
            commands.append(SlotAutoRelease(at_ms=due_ms, project=project, customer_id=customer_id, holding_lsn=due_lsn))
        elif kind == DUE_EXPIRE:
            if due_ms != expire_ms_last:  # one ExpireBuckets per due instant covers them all
                commands.append(ExpireBuckets(at_ms=due_ms, project=project, customer_id=customer_id))
                expire_ms_last = due_ms
        else:
            assert transaction_id is not None
            commands.append(
                AutoSettle(at_ms=due_ms, project=project, customer_id=customer_id, transaction_id=transaction_id)
            )
    return commands


def next_due_ms(state: LedgerState) -> int | None:
    """The earliest live timer over all customers, or None. Drops dead pointers as it goes."""
    heap = state.due_heap
    while heap:
        due_ms, project, customer_id = heap[0]
        customer = find_customer(state, project, customer_id)
        customer_ms = None if customer is None else _customer_next_due_ms(customer)
        if customer_ms is not None and customer_ms <= due_ms:
            return customer_ms
        heapq.heappop(heap)  # this pointer's timer is gone; a later one has its own pointer
    return None


def pop_due_customers(state: LedgerState, now_ms: int) -> list[tuple[str, str]]:
    """Customers with a timer due at or before `now_ms`, in due order, each once.

    The caller fires `due_commands` for each. A pointer to each returned customer's earliest
    timer stays in the heap, so a customer whose timers could not be fired this time (busy
    shard) is offered again; once fired, the pointer is dead and `next_due_ms` drops it.
    """
    heap = state.due_heap
    found: dict[tuple[str, str], int] = {}  # insertion-ordered: due order, no set iteration
    while heap and heap[0][0] <= now_ms:
        _, project, customer_id = heapq.heappop(heap)
        customer = find_customer(state, project, customer_id)
        customer_ms = None if customer is None else _customer_next_due_ms(customer)
        if customer_ms is not None and customer_ms <= now_ms:
            found.setdefault((project, customer_id), customer_ms)
    for (project, customer_id), customer_ms in found.items():
        heapq.heappush(heap, (customer_ms, project, customer_id))
    return list(found)


